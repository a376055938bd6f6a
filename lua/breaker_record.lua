-- Record the outcome of a call through a circuit breaker, and make the transition it causes.
-- KEYS, ARGV and the reply: app/breaker/protocol.py.
local key = KEYS[1]
local call_gen = tonumber(ARGV[1])
local outcome = tonumber(ARGV[2])
local probe = tonumber(ARGV[3])
local ok_batch = tonumber(ARGV[4])
local failure_threshold = tonumber(ARGV[5])
local success_threshold = tonumber(ARGV[6])
local recovery_us = tonumber(ARGV[7]) * 1000
local rate_threshold = tonumber(ARGV[8])
local window_ms = tonumber(ARGV[9])
local min_calls = tonumber(ARGV[10])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local h = redis.call('HMGET', key, 'state', 'gen', 'failures', 'successes', 'probes', 'open_until')
local state = h[1] or 'closed'
local gen = tonumber(h[2] or '0')
local failures = tonumber(h[3] or '0')
local successes = tonumber(h[4] or '0')
local probes = tonumber(h[5] or '0')
local open_until = tonumber(h[6] or '0')

-- The rate rule's rolling window: 10 buckets of window_ms/10, field w<i> = "index:calls:fails".
local BUCKETS = 10
local function bucket_add(calls, fails)
  local width = window_ms * 100  -- microseconds per bucket
  local index = math.floor(now / width)
  local field = 'w' .. (index % BUCKETS)
  local old = redis.call('HGET', key, field)
  local c, f = 0, 0
  if old then
    local oi, oc, of = string.match(old, '^(%d+):(%d+):(%d+)$')
    if tonumber(oi) == index then c, f = tonumber(oc), tonumber(of) end
  end
  redis.call('HSET', key, field, index .. ':' .. (c + calls) .. ':' .. (f + fails))
end
local function rate_trips()
  local width = window_ms * 100
  local index = math.floor(now / width)
  local calls, fails = 0, 0
  for i = 0, BUCKETS - 1 do
    local v = redis.call('HGET', key, 'w' .. i)
    if v then
      local oi, oc, of = string.match(v, '^(%d+):(%d+):(%d+)$')
      if tonumber(oi) > index - BUCKETS then
        calls = calls + tonumber(oc)
        fails = fails + tonumber(of)
      end
    end
  end
  return calls >= min_calls and fails >= rate_threshold * calls
end
local function clear_window()
  for i = 0, BUCKETS - 1 do redis.call('HDEL', key, 'w' .. i) end
end
local function move(to)
  state = to
  gen = gen + 1
  failures, successes, probes = 0, 0, 0
  if to == 'open' then
    open_until = now + recovery_us
    redis.call('HINCRBY', key, 'opened', 1)
  else
    open_until = 0
  end
  clear_window()
  redis.call('HSET', key, 'state', state, 'gen', gen, 'failures', 0, 'successes', 0, 'probes', 0,
             'open_until', open_until, 'changed_at', now)
end
local function reply(counted, event)
  local left = 0
  if state == 'open' and open_until > now then left = math.ceil((open_until - now) / 1000) end
  return {counted, state, gen, failures, left, event}
end

if rate_threshold > 0 and ok_batch > 0 and state == 'closed' then
  bucket_add(ok_batch, 0)
end
if call_gen ~= gen then
  -- Admitted before the last transition: the new state is not this call's business.
  return reply(0, 0)
end

local event = 0
if state == 'closed' then
  if outcome == 1 then
    failures = failures + 1
    local trip = failures >= failure_threshold
    if rate_threshold > 0 then
      bucket_add(1, 1)
      trip = trip or rate_trips()
    end
    if trip then
      move('open')
      event = 1
    else
      redis.call('HSET', key, 'state', state, 'gen', gen, 'failures', failures)
      if failures == 1 then event = 2 end
    end
  elseif outcome == 0 then
    if rate_threshold > 0 then bucket_add(1, 0) end
    if failures > 0 then
      failures = 0
      redis.call('HSET', key, 'failures', 0)
      event = 2
    end
  end
elseif state == 'half_open' then
  if probe == 1 and probes > 0 then
    probes = probes - 1
    redis.call('HSET', key, 'probes', probes)
  end
  if outcome == 1 then
    move('open')
    event = 1
  elseif outcome == 0 then
    successes = successes + 1
    if successes >= success_threshold then
      move('closed')
      event = 1
    else
      redis.call('HSET', key, 'successes', successes)
    end
  end
end
return reply(1, event)
