-- Remove every entry stored for some URIs (an unsafe request's target, its Location and
-- Content-Location): each uri key lists its entries' index members (cache_set.lua), every variant.
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- Deleted entries are named from ARGV[1] (same hash tag, same Cluster slot; see README "Caching").
local removed = 0
for i = 6, #KEYS do
  for _, m in ipairs(redis.call('HKEYS', KEYS[i])) do
    local cut = string.find(m, '\0', 1, true)  -- a member without a path (an older build's) is the id
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
    redis.call('ZREM', KEYS[3], m)
    local size = redis.call('HGET', KEYS[4], m)
    if size then
      redis.call('HDEL', KEYS[4], m)
      redis.call('HINCRBY', KEYS[5], 'bytes', -tonumber(size))
    end
    removed = removed + redis.call('DEL', ARGV[1] .. (cut and string.sub(m, cut + 1) or m))
  end
  redis.call('DEL', KEYS[i])
end
return removed
