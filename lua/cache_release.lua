-- The filler got an answer it cannot store: free the lock and wake the waiters (if a lookup
-- marked the lock: see cache_get.lua).
-- KEYS: 1 fill lock, 2 pass marker
-- ARGV: 1 lock token, 2 pass ms ("0": none; else the answer is not cacheable, so for that long
--       callers go to the backend at once instead of queueing on the lock), 3 channel, 4 entry id
-- Reply: 1 when this caller held the lock
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] and held ~= ARGV[1] .. '!' then return 0 end
redis.call('DEL', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
if held ~= ARGV[1] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
