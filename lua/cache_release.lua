-- The filler got an answer it cannot store: free the lock and wake the waiters (if a lookup
-- marked the lock: see cache_get.lua). The fill leaves its URI's index (cache_get.lua listed it):
-- its member is "1" again when an entry of it is still kept (expired, in its grace), else gone.
-- KEYS, ARGV and the reply: app/cache/protocol.py.
if redis.call('HGET', KEYS[3], ARGV[5]) == ARGV[1] then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[5], '1')
  else
    redis.call('HDEL', KEYS[3], ARGV[5])
  end
end
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] and held ~= ARGV[1] .. '!' then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
if held ~= ARGV[1] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
