-- Store one response: entry, its bucket's indexes and LRU bound, lock release, waiters woken (a
-- message only when a lookup marked the lock: someone waits; see cache_get.lua).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- The three indexes share their members, "<path>\0<id>": an entry found in one (the least
-- recently read, one whose grace is over) is named in the others and its key is the prefix and
-- the id. Eviction deletes entries named from ARGV[10] (not in KEYS): they share this script's
-- hash tag, so Redis Cluster runs it on one slot; see README "Caching".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
-- The LRU's score for a read or a write (the same as cache_get.lua's): the time in microseconds, raised past the last score given
-- (kept in the stats hash as "clock"), so that no two touches tie, within a microsecond or on a
-- clock that stepped back: eviction follows the order of the touches exactly.
local function lru_score(stats)
  local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('HGET', stats, 'clock'))
  if last and at <= last then at = last + 1 end
  at = string.format('%d', at)
  redis.call('HSET', stats, 'clock', at)
  return at
end
local fresh = now + tonumber(ARGV[2])
local swr = fresh + tonumber(ARGV[3])
local stale = fresh + math.max(tonumber(ARGV[4]), tonumber(ARGV[3]))
-- Kept past its grace, not served, when it may be revalidated (ARGV[13]): until "kept".
local kept = math.max(stale, fresh + tonumber(ARGV[13]))
local keep = kept - now

-- The bytes each entry's head and body take (KEYS[10], member -> bytes) and their sum (the stats
-- hash's "bytes"): whatever leaves the indexes leaves these too, so the sum follows the indexes.
local function forget_size(m)
  local size = redis.call('HGET', KEYS[10], m)
  if size then
    redis.call('HDEL', KEYS[10], m)
    redis.call('HINCRBY', KEYS[8], 'bytes', -tonumber(size))
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
redis.call('ZADD', KEYS[2], lru_score(KEYS[8]), member)
redis.call('ZADD', KEYS[3], kept, member)
redis.call('ZADD', KEYS[4], 0, member)
local size = #ARGV[5] + #ARGV[6]
local before = tonumber(redis.call('HGET', KEYS[10], member) or '0')
redis.call('HSET', KEYS[10], member, size)
redis.call('HINCRBY', KEYS[8], 'bytes', size - before)
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[6], ARGV[9], 'PX', keep)
  redis.call('DEL', KEYS[7])
else
  redis.call('DEL', KEYS[6], KEYS[7])
end

-- The entry under its URI, for a purge by an unsafe request (cache_purge.lua): the list lives as
-- long as its longest-kept entry; past 64 members, those whose entry is gone leave it.
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
-- least recently read entries go first.
local evicted = 0
local function evict_one()
  local victim = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('ZREM', KEYS[3], victim)
  redis.call('ZREM', KEYS[4], victim)
  forget_size(victim)
  redis.call('DEL', entry_key(victim))
  evicted = evicted + 1
end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
while excess > 0 do
  evict_one()
  excess = excess - 1
end
local max_bytes = tonumber(ARGV[14])
if max_bytes > 0 then
  while tonumber(redis.call('HGET', KEYS[8], 'bytes') or '0') > max_bytes and redis.call('ZCARD', KEYS[2]) > 0 do
    evict_one()
  end
end
if evicted > 0 then redis.call('HINCRBY', KEYS[8], 'evictions', evicted) end

if ARGV[8] ~= '' then
  local held = redis.call('GET', KEYS[5])
  if held == ARGV[8] then
    redis.call('DEL', KEYS[5])
  elseif held == ARGV[8] .. '!' then
    redis.call('DEL', KEYS[5])
    redis.call('PUBLISH', ARGV[11], ARGV[12])
  end
end
return {evicted, purged}
