-- Ask to send a call through a breaker that is open or half-open (never called while closed).
-- OPEN past its recovery time becomes HALF_OPEN here, once for the fleet; HALF_OPEN lets through
-- at most max_probes calls at a time. A probe that never reports (its replica died) holds its slot
-- only until lease_ms after the last grant.
-- KEYS, ARGV and the reply: app/breaker/protocol.py.
local key = KEYS[1]
local max_probes = tonumber(ARGV[1])
local lease_us = tonumber(ARGV[2]) * 1000

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local h = redis.call('HMGET', key, 'state', 'gen', 'failures', 'probes', 'open_until', 'probe_until')
local state = h[1] or 'closed'
local gen = tonumber(h[2] or '0')
local failures = tonumber(h[3] or '0')
local probes = tonumber(h[4] or '0')
local open_until = tonumber(h[5] or '0')
local probe_until = tonumber(h[6] or '0')

local function reply(granted, event)
  local left = 0
  if state == 'open' and open_until > now then left = math.ceil((open_until - now) / 1000) end
  return {granted, state, gen, failures, left, event}
end

if state == 'closed' then
  return reply(1, 0)
end
local event = 0
if state == 'open' then
  if now < open_until then
    return reply(0, 0)
  end
  state = 'half_open'
  gen = gen + 1
  probes = 0
  event = 1
  redis.call('HSET', key, 'state', state, 'gen', gen, 'successes', 0, 'probes', 0, 'open_until', 0,
             'changed_at', now)
  open_until = 0
end
if probes > 0 and now >= probe_until then
  probes = 0  -- the leases ran out: those probes' replicas are gone
end
if probes >= max_probes then
  redis.call('HSET', key, 'probes', probes)
  return reply(0, event)
end
redis.call('HSET', key, 'probes', probes + 1, 'probe_until', now + lease_us)
return reply(1, event)
