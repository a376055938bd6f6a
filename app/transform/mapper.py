"""Field mappings between named schema versions, usable in both directions."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from app.transform.errors import TransformationError
from app.transform.paths import (
    MISSING,
    FieldPath,
    apply_to_objects,
    check_field_mappings,
    extract,
    json_copy,
    place,
)


class CompiledMapping:
    """One direction of one registered mapping, with its paths parsed once."""

    __slots__ = ("source", "target", "pairs", "keep_unmapped", "name")

    def __init__(
        self,
        source: str,
        target: str,
        pairs: tuple[tuple[FieldPath, FieldPath], ...],
        keep_unmapped: bool,
    ) -> None:
        self.source = source
        self.target = target
        self.pairs = pairs
        self.keep_unmapped = keep_unmapped
        self.name = f"mapping {source}->{target}"

    def inverted(self) -> CompiledMapping:
        return CompiledMapping(
            self.target, self.source, tuple((d, s) for s, d in self.pairs), self.keep_unmapped
        )

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Map one object. With keep_unmapped it is edited in place (the caller owns a copy)."""
        # Take every source out before writing any target, so that swaps and chains
        # ({"a": "b", "b": "a"}) don't overwrite a value that is still to be read.
        if self.keep_unmapped:
            out = obj
            trees = [extract(obj, src, pop=True) for src, _ in self.pairs]
        else:
            out = {}
            trees = [extract(obj, src) for src, _ in self.pairs]
        try:
            for (_, dst), tree in zip(self.pairs, trees):
                if tree is not MISSING:
                    place(out, dst, tree)
        except TransformationError as exc:
            raise exc.with_context(rule=self.name) from None
        return out


Chain = tuple[CompiledMapping, ...]


class SchemaMapper:
    """Maps data between named schema versions.

    ``add_mapping("v1", "v2", {"agent_id": "id"})`` serves v1->v2 and, inverted, v2->v1 (unless
    a v2->v1 mapping is registered too). Versions connect through intermediate ones
    (v1->v2->v3). Two versions with no path between them map as the identity, so a caller can
    name versions it has no mapping for. See ``app.transform.paths`` for the field notation.
    With ``keep_unmapped`` (the default) fields the mapping doesn't name are kept as they are
    (a mapped value wins over an unmapped field of the same name); without it they are dropped.
    """

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], CompiledMapping] = {}
        self._chains: dict[tuple[str, str], Chain | None] = {}

    def add_mapping(
        self,
        source_schema: str,
        target_schema: str,
        field_mappings: Mapping[str, str],
        keep_unmapped: bool = True,
    ) -> None:
        if source_schema == target_schema:
            raise ValueError("a mapping needs two different schema versions")
        pairs = check_field_mappings(field_mappings)
        self._edges[(source_schema, target_schema)] = CompiledMapping(
            source_schema, target_schema, pairs, keep_unmapped
        )
        self._chains.clear()

    def schemas(self) -> set[str]:
        return {version for edge in self._edges for version in edge}

    def chain(self, source_schema: str, target_schema: str) -> Chain | None:
        """The mappings that lead from one version to the other; () for the same version,
        None when no path connects them."""
        key = (source_schema, target_schema)
        if key not in self._chains:
            self._chains[key] = self._find_chain(source_schema, target_schema)
        return self._chains[key]

    def map(self, data: Any, source_schema: str, target_schema: str) -> Any:
        """A mapped copy of ``data`` (an object, or an array of objects); the input is untouched."""
        return apply_chain(json_copy(data), self.chain(source_schema, target_schema) or ())

    def _step(self, source: str, target: str) -> CompiledMapping | None:
        explicit = self._edges.get((source, target))
        if explicit is not None:
            return explicit
        reverse = self._edges.get((target, source))
        return reverse.inverted() if reverse is not None else None

    def _find_chain(self, source: str, target: str) -> Chain | None:
        if source == target:
            return ()
        # Breadth-first: the fewest hops, each hop losing as little as possible.
        neighbours: dict[str, list[str]] = {}
        for a, b in self._edges:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        previous: dict[str, str] = {source: source}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            for nxt in neighbours.get(here, ()):
                if nxt in previous:
                    continue
                previous[nxt] = here
                if nxt == target:
                    hops = [target]
                    while hops[-1] != source:
                        hops.append(previous[hops[-1]])
                    hops.reverse()
                    return tuple(self._step(a, b) for a, b in zip(hops, hops[1:]))  # type: ignore[misc]
                queue.append(nxt)
        return None


def apply_chain(data: Any, chain: Chain) -> Any:
    """Apply mappings to data the caller owns (it may be edited in place)."""
    for mapping in chain:
        data = apply_to_objects(data, mapping.apply)
    return data
