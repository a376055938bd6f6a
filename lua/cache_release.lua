-- The filler got an answer it cannot store: free the lock and wake the waiters (if a lookup
-- marked the lock: see cache_get.lua).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] and held ~= ARGV[1] .. '!' then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
if held ~= ARGV[1] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
