"""The cache's Redis scripts (``lua/cache_*.lua``): their keys, arguments and replies, and the entry's
times field, spelt out here once. Every caller builds its calls and reads its replies through this.

Keys: the cache is N buckets (``cache.buckets``, default 16; ``CacheKeys``), bucket ``i`` under the
hash tag ``{c<i>}``, hence one Redis Cluster slot each. A URI's entries (every Vary variant), its
uri index and its fill locks are in the bucket its path and sorted query choose
(``ApiCacheManager.bucket``), so one script call sees them all. Each bucket (``BucketKeys``) has these keys:
  entry    ``apigw:cache:{c<i>}:e2:<id>`` HASH: ``t`` the times (``EntryTimes``), ``h`` the head and
           ``b`` the body (both opaque to the scripts: app/cache/entry.py)
  lock     ``...:lock:<id>``              the fill lock: the filler's token, "!" appended once a
                                          lookup waits on it (only then is the fill announced)
  pass     ``...:pass:<id>``              set: the answer was not kept; lookups skip the lock
  vary     ``...:vary:<base id>``         the resource's Vary names, comma-separated
  uri      ``...:uri:<uri id>``           HASH index member -> "1": the entries stored for one URI
                                          (``policy.uri_id``), every variant; what an unsafe
                                          request purges. Kept as long as its longest-kept entry
                                          (``FILL_LISTED_MS`` at least, when a lock made it).
                                          A fill in progress is listed too, member -> its lock's
                                          token, from its lookup until its store or release
  lru      ``...:lru``                    ZSET index member -> its last read or write (us, never a tie):
                                          the bucket's LRU order
  exp      ``...:exp``                    ZSET index member -> when the entry is let go (ms): the end of
                                          its grace, or of its revalidation time; index cleanup
  paths    ``...:paths``                  ZSET index member, all scored 0: lexicographic, by path
  sizes    ``...:sizes``                  HASH index member -> the bytes its head and body take
  stats    ``...:stats``                  HASH the bucket's ``hits``, ``misses``, ``evictions``, ``clock`` (the
                                          last LRU score given), ``bytes`` (the sizes summed; what leaves
                                          the indexes leaves both)
  channel  ``apigw:events:cache``         the ids of filled entries someone waits for (one for all buckets)
An index member names an entry in all three indexes alike: ``"<path>\\0<id>"`` (``index_member``).
Every call below names the keys of one bucket; ``invalidate_calls`` and ``stats_calls`` make one call
per bucket, ``purge_calls`` one per bucket its URIs are in, each batch sent in one round trip.

The per-entry scripts (cache_get, cache_set, cache_release) take only the bucket's stats key in
KEYS; they name their other keys from its prefix ("<bucket>:" of "<bucket>:stats") and the ids
in ARGV, as ``BucketKeys`` spells them: an entry id, a base id ("" when it is the entry id: a
resource without Vary), a uri id, and the request's path (the index member is "<path>\\0<id>",
``index_member``). Those keys share the stats key's hash tag, hence its slot. What that saves: a
lookup and a store are the most frequent calls, and their 7 and 10 key names (an id behind a
20-odd byte prefix) were built in Python, packed and sent each time; now each id goes once.
cache_get (``lookup_call``; reply ``LookupReply``)
  KEYS  stats
  ARGV  mode (MAY_LOCK may lock or wait, FINAL never locks nor waits, WARM peeks and locks when
        due), lock token, lock ms, path, entry id, base id, the Vary names the caller keyed with,
        warm margin (due when less than this share, per mille, of the entry's lifetime is left),
        listed ms (a uri key the lock creates is kept that long: ``FILL_LISTED_MS``), uri id
  Taking the lock lists the fill under its URI (uri: member -> token), which is what lets a
  write purge a fill whose store has not landed (below).
  reply [code, locked, now_ms, times, head, body]; code HIT, STALE (serve it; locked: this caller
        refreshes it), MISS (locked: this caller fills it), WAIT (another caller fills it),
        VARY ([code, 0, now_ms, the names to key with]), FRESH and DUE (WARM: [code, locked,
        now_ms, times], locked when this caller refreshes). A MISS, WAIT or DUE carries the expired
        entry, if one is kept, for stale-if-error.
cache_set (``store_call``)
  KEYS  stats
  ARGV  path, entry id, base id, uri id, fresh ms, stale-while-revalidate ms, grace ms, head, body,
        most entries, lock token ("" none), Vary names ("" none), revalidate ms (the entry is kept
        that long past its freshness, to be revalidated; its times say when it may be served
        stale, which this does not change), most bytes (0 none), channel; the most entries and
        bytes are the bucket's share of ``max_size`` and ``max_bytes`` (``share``)
  reply [evicted, purged, stored]; with a lock token, the store is refused (reply [0, 0, 0], the
        lock given back) unless uri still lists the fill under that token: an unsafe request
        purged the URI since the lookup, so the answer may predate the write
cache_release (``release_call``)
  KEYS  stats
  ARGV  lock token, pass ms (0 none; else for that long lookups go straight to the backend), channel,
        entry id, path, uri id (the fill leaves uri: "1" again while the entry is kept, else gone)
  reply 1 when the caller held the lock, else 0
cache_invalidate (``invalidate_calls``)
  KEYS  lru, exp, paths, sizes, stats
  ARGV  "prefix" or "glob", the path (prefix) or the glob's literal head, the glob, entry key prefix
  reply how many entries were removed
cache_peek (``peek_call``)
  KEYS  the URI's uri keys (with and without the host)
  ARGV  none
  reply 1 when one of them lists entries or fills in progress, else 0
cache_purge (``purge_calls``)
  KEYS  lru, exp, paths, sizes, stats, then the uri keys to purge (of this bucket's URIs)
  ARGV  entry key prefix, lock key prefix, channel
  reply how many entries were removed; the listed fills' locks are deleted (waiters announced,
        they look again) and their stores will be refused: a write holds for the fleet even
        against a miss answered before it whose store lands after it
cache_stats (``stats_calls``; replies summed by ``stats_total``)
  KEYS  stats, lru, exp, paths, sizes
  ARGV  most expired index entries to drop in this call
  reply [hits, misses, size, evictions]

Entries and the indexes are deleted by name from the entry key prefix, not from KEYS: they carry the
bucket's hash tag, so Redis Cluster runs the script on the bucket's slot (README "Caching"). The LRU
index, the path index and the counters are single keys that every store and lookup script updates
atomically with the entry, so they must share a slot with the entries they index: hence one set of
them per bucket, not one for the cache. What that costs: ``max_size`` holds per bucket (each keeps
at most its share, rounded up, evicting its own least recently read entry even when another bucket
has room), so the cache holds at most ``buckets`` x ``share(max_size)`` entries. With one bucket the
LRU is fleet-wide and exact, and the whole cache lives on one shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from app.cache.policy import vary_names
from app.store import ScriptCall, Store
from app.store.slots import key_slot

TAG = "c"

# cache_get's modes.
MAY_LOCK, FINAL, WARM = "0", "1", "2"
# cache_get's reply codes.
MISS, HIT, WAIT, VARY, STALE, FRESH, DUE = 0, 1, 2, 3, 4, 5, 6

_GLOB = frozenset("*?[")
# How long a uri key that a fill's lock creates is kept: past any fill but a pathological one. A
# store later than that is refused (that answer is not kept), never one a purge could miss.
FILL_LISTED_MS = 120_000
_new = tuple.__new__  # builds the replies below from their fields without a Python-level __new__


class BucketKeys:
    """The keys of one bucket: its entries and their locks, and its own indexes and counters."""

    __slots__ = ("index", "slot", "entry_prefix", "lock_prefix", "pass_prefix", "vary_prefix", "uri_prefix", "lru",
                 "exp", "paths", "sizes", "stats", "stats_only", "channel")

    def __init__(self, store: Store, index: int, channel: str) -> None:
        tag = f"{TAG}{index}"
        base = store.key("cache", tag)
        self.index = index
        # Computed once: the cluster store routes the bucket's calls without hashing their keys.
        self.slot = key_slot(tag)
        # Per-entry keys are a prefix and the id; the per-entry scripts spell the same names from
        # the stats key's prefix (lua/cache_get.lua), so these and "stats" change with them. "e2" is
        # the entry layout's version: replicas of builds with another layout (a fleet mid-upgrade)
        # never read each other's entries, they just do not share them until all are upgraded.
        self.entry_prefix = f"{base}:e2:"
        self.lock_prefix = f"{base}:lock:"
        self.pass_prefix = f"{base}:pass:"
        self.vary_prefix = f"{base}:vary:"
        self.uri_prefix = f"{base}:uri:"
        self.lru = f"{base}:lru"
        self.exp = f"{base}:exp"
        self.paths = f"{base}:paths"
        self.sizes = f"{base}:sizes"
        self.stats = f"{base}:stats"
        # The KEYS of the per-entry scripts, which name the bucket's other keys from it.
        self.stats_only = (self.stats,)
        self.channel = channel

    def entry(self, entry_id: str) -> str:
        return self.entry_prefix + entry_id

    def lock(self, entry_id: str) -> str:
        return self.lock_prefix + entry_id


class CacheKeys:
    """The cache's ``buckets`` (``cache.buckets``). A URI's bucket: ``ApiCacheManager.bucket``."""

    __slots__ = ("buckets", "count", "channel")

    def __init__(self, store: Store, buckets: int = 16) -> None:
        self.channel = store.channel("cache")
        self.buckets = tuple(BucketKeys(store, i, self.channel) for i in range(buckets))
        self.count = buckets


def share(total: int, buckets: int) -> int:
    """A bucket's share of a bound for the whole cache (``max_size``, ``max_bytes``): rounded up, so
    that the cache holds at most ``buckets`` x this."""
    return -(-total // buckets)


def index_member(path: str, entry_id: str) -> str:
    """How the LRU, expiry and path indexes name an entry: "<path>\\0<id>"."""
    return path.replace("\0", "") + "\0" + entry_id


class EntryTimes(NamedTuple):
    """An entry's ``t`` field, on the store's clock (ms since the epoch); written by cache_set as
    "fresh_ms swr_ms stale_ms stored_ms" (only the scripts write it)."""

    fresh_ms: int   # fresh until
    swr_ms: int     # served stale while one caller refreshes it, until
    stale_ms: int   # kept to answer instead of a failure (stale-if-error), until
    stored_ms: int  # stored at

    @classmethod
    def decode(cls, raw: bytes) -> EntryTimes:
        times = _new(cls, map(int, raw.split(b" ")))
        if len(times) != 4:
            raise ValueError(f"not an entry's times: {raw[:40]!r}")
        return times


class LookupReply(NamedTuple):
    """cache_get's reply (``lookup_reply``)."""

    code: int
    locked: int                # 1: this caller holds the fill lock now
    now_ms: int                # the store's clock
    times: EntryTimes | None   # the entry's, when one is kept
    head: bytes | None
    body: bytes | None
    vary: tuple[str, ...]      # with VARY: the names to key with


def lookup_reply(raw: list[Any]) -> LookupReply:
    if len(raw) == 6:  # every reply of a request's lookup but VARY
        code, locked, now_ms, times, head, body = raw
        return _new(LookupReply, (code, locked, now_ms, EntryTimes.decode(times) if times is not None else None,
                                  head, body, ()))
    code, locked, now_ms, extra = raw
    if code == VARY:
        return _new(LookupReply, (code, locked, now_ms, None, None, None,
                                  vary_names((extra or b"").decode("latin-1"))))
    return _new(LookupReply, (code, locked, now_ms, EntryTimes.decode(extra) if extra is not None else None,
                              None, None, ()))


def took_fill_lock(raw: list[Any]) -> bool:
    """Whether cache_get's reply, undecoded, is a MISS that gave this caller the fill lock."""
    return raw[0] == MISS and raw[1] == 1


def as_miss(reply: LookupReply) -> LookupReply:
    """A MISS without the lock, at the same time: what a lookup that cannot settle comes to."""
    return _new(LookupReply, (MISS, 0, reply.now_ms, None, None, None, ()))


class CacheStats(NamedTuple):
    """cache_stats's reply; ``from_hash`` reads the same counters without the script's cleanup."""

    hits: int
    misses: int
    size: int
    evictions: int

    @classmethod
    def from_hash(cls, fields: Mapping[bytes, bytes], size: int) -> CacheStats:
        return cls(int(fields.get(b"hits", 0)), int(fields.get(b"misses", 0)), size,
                   int(fields.get(b"evictions", 0)))


def lookup_call(keys: BucketKeys, path: str, entry_id: str, base_id: str, names: tuple[str, ...], mode: str,
                token: str, lock_ms: int, uri_id: str, margin: int = 0) -> ScriptCall:
    """``keys``: the request URI's bucket; ``path``: the request's (the indexes name the entry with
    it); ``names``: the Vary names ``entry_id`` was keyed with; ``uri_id``: as ``store_call``'s (a
    lock taken lists the fill there)."""
    return ScriptCall("cache_get", keys.stats_only,
                      (mode, token, lock_ms, path, entry_id, "" if base_id == entry_id else base_id,
                       ",".join(names) if names else "", margin, FILL_LISTED_MS, uri_id), slot=keys.slot)


def store_call(keys: BucketKeys, path: str, entry_id: str, base_id: str, fresh_ms: int, swr_ms: int, grace_ms: int,
               head: bytes, body: bytes, max_entries: int, token: str, names: tuple[str, ...],
               uri_id: str, revalidate_ms: int = 0, max_bytes: int = 0) -> ScriptCall:
    """``uri_id``: the URI the entry answers (``policy.uri_id``), under which a purge finds it;
    ``max_entries`` and ``max_bytes``: the bucket's (``share``; 0 bytes: no bound)."""
    return ScriptCall(
        "cache_set", keys.stats_only,
        (path, entry_id, "" if base_id == entry_id else base_id, uri_id, fresh_ms, swr_ms, grace_ms, head, body,
         max_entries, token, ",".join(names) if names else "", revalidate_ms, max_bytes, keys.channel),
        slot=keys.slot)


def is_store(call: ScriptCall) -> bool:
    """Whether ``call`` stores an entry (else it is one of the other scripts)."""
    return call.script == "cache_set"


def store_refused(reply: Any) -> bool:
    """Whether a reply is a store's that was refused (``[0, 0, 0]``: its fill was no longer listed
    under its token, see cache_set.lua); False for any other script's reply, or an error."""
    return reply.__class__ is list and len(reply) == 3 and reply[2] == 0


def releases_fill_lock(call: ScriptCall) -> bool:
    """Whether ``call`` stores an entry and gives back its fill lock (it carries the lock token)."""
    return call.script == "cache_set" and call.args[10] != ""


def release_call(keys: BucketKeys, path: str, entry_id: str, token: str, pass_ms: int, uri_id: str) -> ScriptCall:
    return ScriptCall("cache_release", keys.stats_only, (token, pass_ms, keys.channel, entry_id, path, uri_id),
                      slot=keys.slot)


def invalidate_calls(keys: CacheKeys, pattern: str) -> list[ScriptCall]:
    """One call per bucket (sent in one batch; their replies summed). ``pattern``: a glob (``*``,
    ``?``, ``[...]``), or a path, which covers that path and everything below it."""
    pattern = pattern.replace("\0", "")
    first_glob = next((i for i, c in enumerate(pattern) if c in _GLOB), -1)
    if first_glob >= 0:
        head: tuple[str, ...] = ("glob", pattern[:first_glob], pattern)
    else:
        head = ("prefix", pattern.rstrip("/"), "")
    return [ScriptCall("cache_invalidate", (b.lru, b.exp, b.paths, b.sizes, b.stats), (*head, b.entry_prefix),
                       slot=b.slot) for b in keys.buckets]


class UriTarget(NamedTuple):
    """A URI an unsafe request invalidates: its path and query (which choose its bucket) and the
    uri ids it is listed under (``policy.uri_id``, with and without the host)."""

    path: str
    query: bytes
    uri_ids: tuple[str, ...]


BucketOf = Callable[[str, bytes], BucketKeys]


def peek_call(bucket_of: BucketOf, target: UriTarget) -> ScriptCall:
    """Whether the URI has entries stored. ``bucket_of(path, query)``: the manager's ``bucket``."""
    bucket = bucket_of(target.path, target.query)
    return ScriptCall("cache_peek", tuple(bucket.uri_prefix + u for u in target.uri_ids), (), slot=bucket.slot)


def purge_calls(bucket_of: BucketOf, targets: Iterable[UriTarget]) -> list[ScriptCall]:
    """Remove every entry stored for these URIs, all their variants: one call per bucket involved
    (a Location may be in another bucket than the request's URI), sent in one batch."""
    by_bucket: dict[int, tuple[BucketKeys, list[str]]] = {}
    for target in targets:
        bucket = bucket_of(target.path, target.query)
        by_bucket.setdefault(bucket.index, (bucket, []))[1].extend(target.uri_ids)
    return [ScriptCall("cache_purge", (b.lru, b.exp, b.paths, b.sizes, b.stats, *(b.uri_prefix + u for u in ids)),
                       (b.entry_prefix, b.lock_prefix, b.channel), slot=b.slot) for b, ids in by_bucket.values()]


def stats_calls(keys: CacheKeys, most_purged: int) -> list[ScriptCall]:
    """One call per bucket (sent in one batch; ``stats_total`` sums their replies)."""
    return [ScriptCall("cache_stats", (b.stats, b.lru, b.exp, b.paths, b.sizes), (most_purged,), slot=b.slot)
            for b in keys.buckets]


def stats_total(replies: Sequence[Any]) -> CacheStats:
    hits = misses = size = evictions = 0
    for raw in replies:
        hits, misses, size, evictions = hits + raw[0], misses + raw[1], size + raw[2], evictions + raw[3]
    return _new(CacheStats, (hits, misses, size, evictions))
