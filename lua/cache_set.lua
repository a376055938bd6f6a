-- Store one response: entry, its bucket's indexes and LRU bound, lock release, waiters woken (a
-- message only when a lookup marked the lock: someone waits; see cache_get.lua).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- The three indexes share their members, "<path>\0<id>": an entry found in one (the least
-- recently read, one whose grace is over) is named in the others and its key is the prefix and
-- the id. Eviction deletes entries named from ARGV[10] (not in KEYS): they share this script's
-- hash tag, so Redis Cluster runs it on one slot; see README "Caching".
-- The fill lock ARGV[8] holds ("" none): given back once the entry is stored, or refused.
local function release()
  local held = redis.call('GET', KEYS[5])
  if held == ARGV[8] then
    redis.call('DEL', KEYS[5])
  elseif held == ARGV[8] .. '!' then
    redis.call('DEL', KEYS[5])
    redis.call('PUBLISH', ARGV[11], ARGV[12])
  end
end
-- A fill stores only while its URI still lists it under its token (cache_get.lua). Not listed: an
-- unsafe request purged the URI since the lookup (cache_purge.lua), so the answer may predate the
-- write; or a later fill took the key over once this lock expired; or the listing expired.
if ARGV[8] ~= '' and redis.call('HGET', KEYS[9], ARGV[1]) ~= ARGV[8] then
  release()
  return {0, 0, 0}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local fresh = now + tonumber(ARGV[2])
local swr = fresh + tonumber(ARGV[3])
local stale = fresh + math.max(tonumber(ARGV[4]), tonumber(ARGV[3]))
-- Kept past its grace, not served, when it may be revalidated (ARGV[13]): until "kept".
local kept = math.max(stale, fresh + tonumber(ARGV[13]))
local keep = kept - now

-- The stats hash's "clock" (the last LRU score given) and "bytes" (the sizes in KEYS[10], member ->
-- bytes, summed) are read once and written once for the entry. Whatever leaves the indexes later
-- leaves the sum too (forget_size), and the local "bytes" follows it.
local counters = redis.call('HMGET', KEYS[8], 'clock', 'bytes')
local bytes = tonumber(counters[2] or '0')
local function forget_size(m)
  local size = redis.call('HGET', KEYS[10], m)
  if size then
    redis.call('HDEL', KEYS[10], m)
    redis.call('HINCRBY', KEYS[8], 'bytes', -tonumber(size))
    bytes = bytes - tonumber(size)
  end
end

-- The entry's own key; a member without a path (written by an older build) is the id.
local function entry_key(m)
  local cut = string.find(m, '\0', 1, true)
  return ARGV[10] .. (cut and string.sub(m, cut + 1) or m)
end

-- Every write replaces all three fields: no DEL first.
redis.call('HSET', KEYS[1], 't', fresh .. ' ' .. swr .. ' ' .. stale .. ' ' .. now, 'h', ARGV[5], 'b', ARGV[6])
redis.call('PEXPIRE', KEYS[1], keep)
-- The LRU's score for a write (cache_get.lua's lru_score, with the clock read above): the time in
-- microseconds, raised past the last score given, so that no two touches tie, within a
-- microsecond or on a clock that stepped back: eviction follows the order of the touches exactly.
local score = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(counters[1])
if last and score <= last then score = last + 1 end
score = string.format('%d', score)
local added = redis.call('ZADD', KEYS[2], score, member)
redis.call('ZADD', KEYS[3], kept, member)
redis.call('ZADD', KEYS[4], 0, member)
-- A member new to the LRU index has no size yet: the indexes and the sizes leave together.
local size = #ARGV[5] + #ARGV[6]
local before = 0
if added == 0 then before = tonumber(redis.call('HGET', KEYS[10], member) or '0') end
redis.call('HSET', KEYS[10], member, size)
bytes = bytes + size - before
redis.call('HSET', KEYS[8], 'clock', score, 'bytes', bytes)
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[6], ARGV[9], 'PX', keep)
  redis.call('DEL', KEYS[7])
else
  redis.call('DEL', KEYS[6], KEYS[7])
end

-- The entry under its URI ("1", where its fill was listed), for a purge by an unsafe request
-- (cache_purge.lua): the list lives as long as its longest-kept entry; past 64 members, those whose
-- entry is gone leave it (a fill in progress too: its store is then refused, not kept).
redis.call('HSET', KEYS[9], member, 1)
if redis.call('PTTL', KEYS[9]) < keep then redis.call('PEXPIRE', KEYS[9], keep) end
if redis.call('HLEN', KEYS[9]) > 64 then
  for _, m in ipairs(redis.call('HKEYS', KEYS[9])) do
    if redis.call('EXISTS', entry_key(m)) == 0 then redis.call('HDEL', KEYS[9], m) end
  end
end

-- Entries whose grace is over: their keys expired in Redis already; drop them from the indexes.
local purged = 0
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 16)) do
  redis.call('ZREM', KEYS[2], victim)
  redis.call('ZREM', KEYS[3], victim)
  redis.call('ZREM', KEYS[4], victim)
  forget_size(victim)
  purged = purged + 1
end

-- The bucket's bounds, its share of max_size (ARGV[7]) and of max_bytes (ARGV[14], 0: none): its
-- least recently read entries go first. The count, read once, and the sum follow the evictions.
local evicted = 0
local count = redis.call('ZCARD', KEYS[2])
local function evict_one()
  local victim = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('ZREM', KEYS[3], victim)
  redis.call('ZREM', KEYS[4], victim)
  forget_size(victim)
  redis.call('DEL', entry_key(victim))
  evicted = evicted + 1
  count = count - 1
end
while count > tonumber(ARGV[7]) do evict_one() end
local max_bytes = tonumber(ARGV[14])
if max_bytes > 0 then
  while bytes > max_bytes and count > 0 do evict_one() end
end
if evicted > 0 then redis.call('HINCRBY', KEYS[8], 'evictions', evicted) end

if ARGV[8] ~= '' then release() end
return {evicted, purged, 1}
