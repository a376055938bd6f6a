-- Remove every entry stored for some URIs (an unsafe request's target, its Location and
-- Content-Location): each uri key lists its entries' index members (cache_set.lua), every variant,
-- "1" each, and the fills in progress under their lock's token (cache_get.lua). A fill's lock is
-- freed and its waiters woken (they look again and fetch the new state); its store, which finds
-- itself no longer listed, is refused.
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- Deleted entries and locks are named from ARGV[1] and ARGV[2] (same hash tag, same Cluster slot;
-- see README "Caching").
local removed = 0
for i = 6, #KEYS do
  local listed = redis.call('HGETALL', KEYS[i])
  for j = 1, #listed, 2 do
    local m, mark = listed[j], listed[j + 1]
    local cut = string.find(m, '\0', 1, true)  -- a member without a path (an older build's) is the id
    local id = cut and string.sub(m, cut + 1) or m
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
    redis.call('ZREM', KEYS[3], m)
    local size = redis.call('HGET', KEYS[4], m)
    if size then
      redis.call('HDEL', KEYS[4], m)
      redis.call('HINCRBY', KEYS[5], 'bytes', -tonumber(size))
    end
    removed = removed + redis.call('DEL', ARGV[1] .. id)
    if mark ~= '1' then
      local held = redis.call('GET', ARGV[2] .. id)
      if held == mark then
        redis.call('DEL', ARGV[2] .. id)
      elseif held == mark .. '!' then
        redis.call('DEL', ARGV[2] .. id)
        redis.call('PUBLISH', ARGV[3], id)
      end
    end
  end
  redis.call('DEL', KEYS[i])
end
return removed
