-- Fleet-wide cache statistics, after dropping index entries whose grace is over.
-- KEYS: 1 stats, 2 lru index, 3 expiry index, 4 id->path, 5 path index
-- ARGV: 1 most index entries to drop in this call
-- Reply: {hits, misses, size, evictions}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  local p = redis.call('HGET', KEYS[4], victim)
  if p then redis.call('ZREM', KEYS[5], p .. '\0' .. victim) end
  redis.call('HDEL', KEYS[4], victim)
  redis.call('ZREM', KEYS[2], victim)
  redis.call('ZREM', KEYS[3], victim)
end
local s = redis.call('HMGET', KEYS[1], 'hits', 'misses', 'evictions')
return {tonumber(s[1] or 0), tonumber(s[2] or 0), redis.call('ZCARD', KEYS[2]), tonumber(s[3] or 0)}
