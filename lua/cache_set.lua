-- Store one response: entry, indexes, fleet-wide LRU bound, lock release, waiters woken (a
-- message only when a lookup marked the lock: someone waits; see cache_get.lua).
-- KEYS: 1 entry, 2 lru index, 3 expiry index, 4 id->path, 5 path index, 6 fill lock,
--       7 vary record, 8 pass marker, 9 stats
-- ARGV: 1 id, 2 path, 3 fresh ms, 4 stale-while-revalidate ms, 5 grace ms, 6 head, 7 body,
--       8 max entries, 9 lock token ("" none), 10 vary names ("" none), 11 entry key prefix,
--       12 channel to announce the fill on
-- Reply: {evicted, purged}
-- Eviction deletes entries named from ARGV[11] (not in KEYS): they share this script's hash tag,
-- so Redis Cluster runs it on one slot; see README "Caching".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, path = ARGV[1], ARGV[2]
local fresh = now + tonumber(ARGV[3])
local swr = fresh + tonumber(ARGV[4])
local stale = fresh + math.max(tonumber(ARGV[5]), tonumber(ARGV[4]))
local keep = stale - now

local function forget(victim)
  local p = redis.call('HGET', KEYS[4], victim)
  if p then redis.call('ZREM', KEYS[5], p .. '\0' .. victim) end
  redis.call('HDEL', KEYS[4], victim)
  redis.call('ZREM', KEYS[2], victim)
  redis.call('ZREM', KEYS[3], victim)
end

local old = redis.call('HGET', KEYS[4], id)
if old and old ~= path then redis.call('ZREM', KEYS[5], old .. '\0' .. id) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', fresh .. ' ' .. swr .. ' ' .. stale .. ' ' .. now, 'h', ARGV[6], 'b', ARGV[7])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[2], now, id)
redis.call('ZADD', KEYS[3], stale, id)
redis.call('HSET', KEYS[4], id, path)
redis.call('ZADD', KEYS[5], 0, path .. '\0' .. id)
if ARGV[10] ~= '' then
  redis.call('SET', KEYS[7], ARGV[10], 'PX', keep)
else
  redis.call('DEL', KEYS[7])
end
redis.call('DEL', KEYS[8])

-- Entries whose grace is over: their keys expired in Redis already; drop them from the indexes.
local purged = 0
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 16)) do
  forget(victim)
  purged = purged + 1
end

-- The fleet-wide bound: the least recently read entries go first.
local evicted = 0
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[8])
while excess > 0 do
  local victim = redis.call('ZPOPMIN', KEYS[2])[1]
  forget(victim)
  redis.call('DEL', ARGV[11] .. victim)
  evicted = evicted + 1
  excess = excess - 1
end
if evicted > 0 then redis.call('HINCRBY', KEYS[9], 'evictions', evicted) end

if ARGV[9] ~= '' then
  local held = redis.call('GET', KEYS[6])
  if held == ARGV[9] then
    redis.call('DEL', KEYS[6])
  elseif held == ARGV[9] .. '!' then
    redis.call('DEL', KEYS[6])
    redis.call('PUBLISH', ARGV[12], id)
  end
end
return {evicted, purged}
