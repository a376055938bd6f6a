-- One bucket's cache statistics (the caller sums the buckets'), after dropping index entries whose
-- grace is over.
-- KEYS, ARGV and the reply: app/cache/protocol.py.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  redis.call('ZREM', KEYS[2], victim)
  redis.call('ZREM', KEYS[3], victim)
  redis.call('ZREM', KEYS[4], victim)
  local size = redis.call('HGET', KEYS[5], victim)
  if size then
    redis.call('HDEL', KEYS[5], victim)
    redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(size))
  end
end
local s = redis.call('HMGET', KEYS[1], 'hits', 'misses', 'evictions')
return {tonumber(s[1] or 0), tonumber(s[2] or 0), redis.call('ZCARD', KEYS[2]), tonumber(s[3] or 0)}
