"""What this replica learned of each resource's Vary, so that its next lookup uses the right key.

A resource that varies is stored under a key made with the request headers its ``Vary`` names; a
replica that does not know them yet looks under the base key and is told to look again (the
lookup's VARY answer), which costs a round trip. The names are kept here for the most recently
used resources only: a bounded LRU, by base key.
"""

from __future__ import annotations

from collections import OrderedDict

MOST_RESOURCES = 10_000


class VaryHints(OrderedDict[str, tuple[str, ...]]):
    """base id -> the Vary names its entries are keyed with (``get`` is the dict's: the lookup's)."""

    def learn(self, base_id: str, names: tuple[str, ...]) -> None:
        self[base_id] = names
        self.move_to_end(base_id)
        if len(self) > MOST_RESOURCES:
            self.popitem(last=False)
