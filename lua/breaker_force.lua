-- Move a breaker by hand (the admin API): open it for open_ms, close it, or reset it (closed, with
-- its failure counts and rate window cleared and its "opened" count back to 0). Every move is a new
-- generation, so every replica takes it over what it knew, as for any transition.
-- KEYS, ARGV and the reply: app/breaker/protocol.py.
local key = KEYS[1]
local to = ARGV[1]
local open_us = tonumber(ARGV[2]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gen = tonumber(redis.call('HGET', key, 'gen') or '0') + 1
for i = 0, 9 do redis.call('HDEL', key, 'w' .. i) end
local state, open_until = 'closed', 0
if to == 'open' then
  state, open_until = 'open', now + open_us
  redis.call('HINCRBY', key, 'opened', 1)
elseif to == 'reset' then
  redis.call('HSET', key, 'opened', 0)
end
redis.call('HSET', key, 'state', state, 'gen', gen, 'failures', 0, 'successes', 0, 'probes', 0,
           'open_until', open_until, 'changed_at', now)
local left = 0
if state == 'open' then left = math.ceil(open_us / 1000) end
return {1, state, gen, 0, left, 1}
