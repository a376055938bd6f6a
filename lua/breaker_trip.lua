-- Open a closed breaker for open_ms: how a replica that tripped it on its own while Redis was
-- unreachable tells the fleet once Redis is back. A breaker that is not closed is left alone.
-- KEYS, ARGV and the reply: app/breaker/protocol.py.
local key = KEYS[1]
local open_us = tonumber(ARGV[1]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', key, 'state', 'gen', 'failures', 'open_until')
local state = h[1] or 'closed'
local gen = tonumber(h[2] or '0')
local failures = tonumber(h[3] or '0')
local open_until = tonumber(h[4] or '0')
local tripped, event = 0, 0
if state == 'closed' and open_us > 0 then
  state = 'open'
  gen = gen + 1
  failures = 0
  open_until = now + open_us
  tripped, event = 1, 1
  for i = 0, 9 do redis.call('HDEL', key, 'w' .. i) end
  redis.call('HINCRBY', key, 'opened', 1)
  redis.call('HSET', key, 'state', state, 'gen', gen, 'failures', 0, 'successes', 0, 'probes', 0,
             'open_until', open_until, 'changed_at', now)
end
local left = 0
if state == 'open' and open_until > now then left = math.ceil((open_until - now) / 1000) end
return {tripped, state, gen, failures, left, event}
