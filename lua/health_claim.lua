-- Who runs a route's active health checks: one replica at a time holds the lease and renews it each
-- round; when it stops renewing (it died), another takes over after ttl_ms.
-- KEYS, ARGV and the reply: app/breaker/health_protocol.py.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
