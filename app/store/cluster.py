"""The request path on a Redis Cluster.

A batch of script calls is split by the owner of each call's slot (every key of a script shares
one hash tag, so the first key names the slot, unless the call carries its slot already) and sent
to every node involved at once, one multiplexed connection per node: one round trip of latency,
whatever the number of shards. The replies that say the call did not run are sent again, in one
more round:

- ``MOVED slot host:port``: the slot has a new owner; the map is corrected for it at once and
  refreshed in the background;
- ``ASK slot host:port``: a slot being migrated; this call alone goes to the target, after ``ASKING``;
- ``TRYAGAIN``: a multi-key call during a migration; sent again after a few milliseconds;
- ``NOSCRIPT``: a replica promoted by a failover (or a restarted node) lacks the scripts; they are
  loaded there first.

A node that cannot be reached fails only the calls of its slots (``StoreUnavailable``, so each
stage's failure policy applies to those keys alone); the other shards answer as usual. While a node
is down the slot map is asked for again every ``REFRESH_EVERY`` seconds, so the calls follow its
promoted replica as soon as the cluster names it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.background import stop_tasks
from app.store.base import ScriptCall, StoreError, StoreUnavailable
from app.store.node import NodeLink
from app.store.pipe import PipeBroken, ReplyError, encode
from app.store.script_set import ScriptSet
from app.store.slots import SLOTS, SlotCache

log = logging.getLogger("apigw.store")

# Redirections a call may follow in one ``run`` before it is given up as unavailable.
MAX_ROUNDS = 5
# While a node is unreachable, how often the slot map is asked for again.
REFRESH_EVERY = 0.1
_SLOTS_COMMAND = encode(("CLUSTER", "SLOTS"))
_ASKING = encode(("ASKING",))
_PING = encode(("PING",))
# Error replies meaning the call did not run and the shard cannot serve it now.
_UNAVAILABLE = frozenset({"CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY", "BUSY"})


class ClusterRouting:
    def __init__(self, seeds: Sequence[str], scripts: ScriptSet, link: Callable[[str], NodeLink],
                 on_new_owner: Callable[[], Awaitable[None]] | None = None,
                 on_round: Callable[[], None] | None = None) -> None:
        """``seeds``: node addresses (host:port) to learn the slot map from; ``link(address)``
        makes the connection to one node; ``on_new_owner`` runs after a refresh that changed a
        slot's owner (a failover: events on that shard may have been missed); ``on_round`` is
        called once per round trip of latency a batch takes (each may reach several nodes at once)."""
        self.seeds = list(seeds)
        self.scripts = scripts
        self._make_link = link
        self._on_new_owner = on_new_owner
        self._on_round = on_round or (lambda: None)
        self.links: dict[str, NodeLink] = {}
        self.owners: list[str | None] = [None] * SLOTS
        self.slots = SlotCache()  # slots[key]: the key's slot
        self._refresh: asyncio.Task[bool] | None = None
        self._refreshed_at = 0.0

    def link(self, address: str) -> NodeLink:
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = self._make_link(address)
        return link

    @property
    def masters(self) -> list[str]:
        return sorted({owner for owner in self.owners if owner is not None})

    @property
    def covered(self) -> bool:
        return None not in self.owners

    # -- the slot map ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Ask a reachable node for ``CLUSTER SLOTS`` (the known masters first, then the seeds);
        False when none answered."""
        candidates = [*self.masters, *(a for a in self.links if a not in self.owners), *self.seeds]
        for address in dict.fromkeys(candidates):
            link = self.link(address)
            if link.down:
                continue
            try:
                reply = (await link.send([_SLOTS_COMMAND]))[0]
            except StoreUnavailable:
                continue
            if isinstance(reply, ReplyError) or not reply:
                continue  # not a cluster node, or one that has not joined yet
            link.mark_up()
            self._apply(reply, link.pipe.host)
            return True
        return False

    def _apply(self, reply: list[Any], asked_host: str) -> None:
        owners: list[str | None] = [None] * SLOTS
        for start, end, master, *_ in reply:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            if host in ("", "?"):  # the node does not know its own address: the one we asked
                host = asked_host
            owners[start:end + 1] = [f"{host}:{int(master[1])}"] * (end - start + 1)
        before, self.owners = self.owners, owners
        self._refreshed_at = time.monotonic()
        if any(b is not None for b in before) and set(before) != set(owners) and self._on_new_owner is not None:
            log.info("redis cluster: masters are now %s", ", ".join(self.masters))
            asyncio.get_running_loop().create_task(self._on_new_owner())

    def refresh_soon(self) -> None:
        """A background refresh, at most one at a time and one per ``REFRESH_EVERY``."""
        if self._refresh is not None and not self._refresh.done():
            return
        if time.monotonic() - self._refreshed_at < REFRESH_EVERY:
            return
        self._refreshed_at = time.monotonic()
        self._refresh = asyncio.get_running_loop().create_task(self.refresh(), name="apigw-cluster-refresh")

    # -- the request path -----------------------------------------------------------------------

    async def run_each(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, or the ``StoreError`` of that call alone."""
        evalsha = self.scripts.evalsha
        slots = self.slots
        owners = self.owners
        commands: list[bytes] = []
        targets: list[str | None] = []
        # Per owner, the calls' indexes and their commands: the batch that node gets.
        groups: dict[str | None, tuple[list[int], list[bytes]]] = {}
        for i, call in enumerate(calls):
            command = evalsha(call)
            commands.append(command)
            keys = call.keys
            slot = call.slot
            target = owners[slot if slot is not None else slots[keys[0]] if keys else 0]
            targets.append(target)
            group = groups.get(target)
            if group is None:
                groups[target] = ([i], [command])
            else:
                group[0].append(i)
                group[1].append(command)
        results: list[Any] = [None] * len(calls)
        asking: set[int] = set()
        links = self.links
        for _ in range(MAX_ROUNDS):
            orphans = groups.pop(None, None)
            if orphans:  # slots nobody serves (the map is not known yet, or a shard is lost)
                self.refresh_soon()
                for i in orphans[0]:
                    results[i] = StoreUnavailable("redis cluster: no node serves this slot now")
            if not groups:
                return results
            live: dict[str, tuple[list[int], list[bytes]]] = groups  # type: ignore[assignment]  # None was popped
            self._on_round()
            # Written to every node before the first reply is awaited: one round trip of latency.
            sent: list[tuple[str, list[int], NodeLink, Awaitable[Any]]] = []
            for address, (indices, batch) in live.items():
                link = links.get(address) or self.link(address)
                if asking:
                    batch = self._asking_batch(indices, commands, asking)
                future = link.submit(batch)
                # Without an open connection: a task connects, and sends when it can.
                sent.append((address, indices, link, future if future is not None else
                             asyncio.ensure_future(self._connect_and_send(link, batch))))
            pending: list[int] = []
            again: set[str] = set()
            wait = False
            for address, indices, link, waitable in sent:
                try:
                    outcome = await waitable
                except PipeBroken as error:
                    outcome = link.broken(error)
                except asyncio.CancelledError:
                    for *_, other in sent:
                        if isinstance(other, asyncio.Task):
                            other.cancel()
                    raise
                if isinstance(outcome, StoreError):
                    self.refresh_soon()  # its replica may be taking over
                    for i in indices:
                        results[i] = outcome
                    continue
                if link.down_until:
                    link.mark_up()
                replies = self._unasked(indices, outcome, asking) if asking else outcome
                for i, reply in zip(indices, replies, strict=True):
                    if type(reply) is not ReplyError:
                        results[i] = reply
                        continue
                    text = str(reply)
                    kind, _, rest = text.partition(" ")
                    if kind == "MOVED" or kind == "ASK":
                        slot, _, where = rest.partition(" ")
                        targets[i] = where
                        pending.append(i)
                        if kind == "ASK":
                            asking.add(i)
                        else:
                            self.owners[int(slot)] = where
                            self.refresh_soon()
                    elif kind == "TRYAGAIN":
                        pending.append(i)
                        wait = True
                    elif kind == "NOSCRIPT":
                        pending.append(i)
                        again.add(address)
                    elif kind in _UNAVAILABLE:
                        self.refresh_soon()
                        results[i] = StoreUnavailable(f"redis at {address}: {text}")
                    else:
                        results[i] = StoreError(text)
            if not pending:
                return results
            for address in again:
                try:
                    await self.link(address).load_scripts()
                except StoreError as error:
                    for i in pending:
                        if targets[i] == address:
                            results[i] = error
                    pending = [i for i in pending if targets[i] != address]
            if wait:
                await asyncio.sleep(0.005)
            groups = {}
            for i in pending:
                indices, batch = groups.setdefault(targets[i], ([], []))
                indices.append(i)
                batch.append(commands[i])
        for indices, _ in groups.values():
            for i in indices:
                results[i] = StoreUnavailable(f"redis cluster: still redirected after {MAX_ROUNDS} tries")
        return results

    @staticmethod
    def _asking_batch(indices: list[int], commands: list[bytes], asking: set[int]) -> list[bytes]:
        # ASKING holds for the one command after it, on the same connection: the pair leaves in
        # one write, and its +OK is dropped (``_unasked``).
        batch: list[bytes] = []
        for i in indices:
            if i in asking:
                batch.append(_ASKING)
            batch.append(commands[i])
        return batch

    @staticmethod
    def _unasked(indices: list[int], raw: list[Any], asking: set[int]) -> list[Any]:
        replies, position = [], 0
        for i in indices:
            if i in asking:
                position += 1
                asking.discard(i)
            replies.append(raw[position])
            position += 1
        return replies

    @staticmethod
    async def _connect_and_send(link: NodeLink, batch: list[bytes]) -> list[Any] | StoreError:
        try:
            link.refuse_while_down()
            return await link.send(batch)
        except StoreError as error:
            return error

    # -- health ---------------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Every slot has an owner, and every owner answers and knows every script. A master that
        does not answer has the map asked for again (in the background), so that readiness follows
        its promoted replica even while no request touches the lost slots."""
        if not self.covered and not await self.refresh():
            return False
        if not self.covered:
            return False
        for address in self.masters:
            link = self.link(address)
            try:
                link.refuse_while_down()
                if not await link.has_scripts():
                    return False
            except StoreError:
                self.refresh_soon()
                return False
        return True

    async def ping(self) -> bool:
        if not self.covered:
            return False
        for address in self.masters:
            try:
                reply = (await self.link(address).send([_PING]))[0]
            except StoreError:
                return False
            if isinstance(reply, ReplyError):
                return False
        return True

    async def load_scripts(self) -> None:
        for address in self.masters:
            await self.link(address).load_scripts()

    async def close(self) -> None:
        await stop_tasks([self._refresh])
        for link in self.links.values():
            await link.close()
