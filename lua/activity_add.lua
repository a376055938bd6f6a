-- Requests per client, fleet-wide, for the status page's busiest clients: two windows of ARGV[1]
-- seconds (the current one and the one before), each a sorted set client -> requests. Replicas
-- count locally and add their counts here about once a second, off the request path.
-- KEYS, ARGV and the reply: app/control/activity_protocol.py.
local window = tonumber(ARGV[1])
local epoch = math.floor(tonumber(redis.call('TIME')[1]) / window)
local seen = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '-1')
if seen ~= epoch then
  -- A new window: the current one becomes the previous one, or both are over.
  if seen == epoch - 1 and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[2])
  else
    redis.call('DEL', KEYS[1], KEYS[2])
  end
  redis.call('HSET', KEYS[3], 'epoch', epoch)
end
for i = 3, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
-- Memory stays bounded whatever clients claim to be: only the busiest are kept.
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], window * 2)
end
return redis.call('ZCARD', KEYS[1])
