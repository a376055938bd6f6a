-- Store one response: entry, its bucket's indexes and LRU bound, lock release, waiters woken (a
-- message only when a lookup marked the lock: someone waits; see cache_get.lua).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- Only the bucket's stats hash is in KEYS: the script's other keys are named here from its prefix
-- and the ids in ARGV (protocol.py). They share its hash tag, so Redis Cluster runs it on one
-- slot; see README "Caching".
-- The three indexes share their members, "<path>\0<id>": an entry found in one (the least
-- recently read, one whose grace is over) is named in the others and its key is the prefix and
-- the id.
-- The fill lock ARGV[11] holds ("" none): given back once the entry is stored, or refused.
local P = string.sub(KEYS[1], 1, -6)  -- "<bucket>:" of "<bucket>:stats"
local stats_key = KEYS[1]
local id = ARGV[2]
local base = ARGV[3]
if base == '' then base = id end
local token = ARGV[11]
local entry = P .. 'e2:' .. id
local lock_key = P .. 'lock:' .. id
local lru, exp, paths, sizes = P .. 'lru', P .. 'exp', P .. 'paths', P .. 'sizes'
local uri_key = P .. 'uri:' .. ARGV[4]
local member = string.gsub(ARGV[1], '%z', '') .. '\0' .. id
local function release()
  local held = redis.call('GET', lock_key)
  if held == token then
    redis.call('DEL', lock_key)
  elseif held == token .. '!' then
    redis.call('DEL', lock_key)
    redis.call('PUBLISH', ARGV[15], id)
  end
end
-- A fill stores only while its URI still lists it under its token (cache_get.lua). Not listed: an
-- unsafe request purged the URI since the lookup (cache_purge.lua), so the answer may predate the
-- write; or a later fill took the key over once this lock expired; or the listing expired.
if token ~= '' and redis.call('HGET', uri_key, member) ~= token then
  release()
  return {0, 0, 0}
end

local t = redis.call('TIME')
-- Each number is read once: tonumber runs strtod, which is most of what reading one costs.
local seconds, micros = tonumber(t[1]), tonumber(t[2])
local now = seconds * 1000 + math.floor(micros / 1000)
local fresh = now + tonumber(ARGV[5])
local swr_ms = tonumber(ARGV[6])
local swr = fresh + swr_ms
local stale = fresh + math.max(tonumber(ARGV[7]), swr_ms)
-- Kept past its grace, not served, when it may be revalidated (ARGV[13]): until "kept".
local kept = math.max(stale, fresh + tonumber(ARGV[13]))
local keep = kept - now
-- Numbers go to redis.call as strings made here with %d: Redis formats a Lua number argument with
-- %.17g, several times the cost (callgrind put an eighth of this script's instructions in
-- formatting numbers).
local function int(n) return string.format('%d', n) end
local now_s, keep_s = int(now), int(keep)

-- The stats hash's "clock" (the last LRU score given), "bytes" (the sizes hash, member -> bytes,
-- summed) and "evictions" are read once and written once, at the end, however many entries leave
-- the indexes meanwhile (forget_size keeps the local sum): one call, not one per entry that goes.
local counters = redis.call('HMGET', stats_key, 'clock', 'bytes', 'evictions')
local bytes = tonumber(counters[2] or '0')
local function forget_size(m)
  local size = redis.call('HGET', sizes, m)
  if size then
    redis.call('HDEL', sizes, m)
    bytes = bytes - tonumber(size)
  end
end

-- The entry's own key; a member without a path (written by an older build) is the id.
local function entry_key(m)
  local cut = string.find(m, '\0', 1, true)
  return P .. 'e2:' .. (cut and string.sub(m, cut + 1) or m)
end

-- An entry deleted before its time (evicted) leaves its URI's index too: else the index, kept as
-- long as the entry would have been, outlives it, one per URI ever stored (cache_invalidate.lua
-- does the same). A fill in progress listed under the same member (its token) stays listed.
local function unlist(key, m)
  local uri = redis.call('HGET', key, 'u')
  if uri and redis.call('HGET', P .. 'uri:' .. uri, m) == '1' then
    redis.call('HDEL', P .. 'uri:' .. uri, m)
  end
end

-- Every write replaces all four fields: no DEL first.
-- "u": the uri id it is listed under, for whoever deletes it before its time (unlist).
redis.call('HSET', entry, 't', string.format('%d %d %d %d', fresh, swr, stale, now), 'h', ARGV[8],
  'b', ARGV[9], 'u', ARGV[4])
redis.call('PEXPIRE', entry, keep_s)
-- The LRU's score for a write (cache_get.lua's lru_score, with the clock read above): the time in
-- microseconds, raised past the last score given, so that no two touches tie, within a
-- microsecond or on a clock that stepped back: eviction follows the order of the touches exactly.
local score = seconds * 1000000 + micros
local last = tonumber(counters[1])
if last and score <= last then score = last + 1 end
score = int(score)
local added = redis.call('ZADD', lru, score, member)
redis.call('ZADD', exp, int(kept), member)
redis.call('ZADD', paths, '0', member)
-- A member new to the LRU index has no size yet: the indexes and the sizes leave together.
local size = #ARGV[8] + #ARGV[9]
local before = 0
if added == 0 then before = tonumber(redis.call('HGET', sizes, member) or '0') end
redis.call('HSET', sizes, member, int(size))
bytes = bytes + size - before
if ARGV[12] ~= '' then
  redis.call('SET', P .. 'vary:' .. base, ARGV[12], 'PX', keep_s)
  redis.call('DEL', P .. 'pass:' .. id)
else
  redis.call('DEL', P .. 'vary:' .. base, P .. 'pass:' .. id)
end

-- The entry under its URI ("1", where its fill was listed), for a purge by an unsafe request
-- (cache_purge.lua): the list lives as long as its longest-kept entry; past 64 members, those whose
-- entry is gone leave it (a fill in progress too: its store is then refused, not kept).
redis.call('HSET', uri_key, member, '1')
if token ~= '' then
  -- A fill's lookup listed it with a time to live (cache_get.lua), which GT only ever raises.
  redis.call('PEXPIRE', uri_key, keep_s, 'GT')
elseif redis.call('PTTL', uri_key) < keep then
  -- Without a fill the key may be new, with no time to live, which GT would leave as it is.
  redis.call('PEXPIRE', uri_key, keep_s)
end
if redis.call('HLEN', uri_key) > 64 then
  for _, m in ipairs(redis.call('HKEYS', uri_key)) do
    if redis.call('EXISTS', entry_key(m)) == 0 then redis.call('HDEL', uri_key, m) end
  end
end

-- Entries whose grace is over: their keys expired in Redis already; drop them from the indexes.
local purged = 0
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now_s, 'LIMIT', '0', '16')) do
  redis.call('ZREM', lru, victim)
  redis.call('ZREM', exp, victim)
  redis.call('ZREM', paths, victim)
  forget_size(victim)
  purged = purged + 1
end

-- The bucket's bounds, its share of max_size (ARGV[10]) and of max_bytes (ARGV[14], 0: none): its
-- least recently read entries go first. The count, read once, and the sum follow the evictions.
local evicted = 0
local count = redis.call('ZCARD', lru)
local function evict_one()
  local victim = redis.call('ZPOPMIN', lru)[1]
  redis.call('ZREM', exp, victim)
  redis.call('ZREM', paths, victim)
  forget_size(victim)
  local key = entry_key(victim)
  unlist(key, victim)
  redis.call('DEL', key)
  evicted = evicted + 1
  count = count - 1
end
local max_count = tonumber(ARGV[10])
while count > max_count do evict_one() end
local max_bytes = tonumber(ARGV[14])
if max_bytes > 0 then
  while bytes > max_bytes and count > 0 do evict_one() end
end
if evicted > 0 then
  redis.call('HSET', stats_key, 'clock', score, 'bytes', int(bytes),
    'evictions', int(tonumber(counters[3] or '0') + evicted))
else
  redis.call('HSET', stats_key, 'clock', score, 'bytes', int(bytes))
end

if token ~= '' then
  -- The lock is this fill's (its listing, checked above, would name another fill's token) or it
  -- expired: taken back in one call, waiters told if a lookup marked it.
  if redis.call('GETDEL', lock_key) == token .. '!' then redis.call('PUBLISH', ARGV[15], id) end
end
return {evicted, purged, 1}
