-- Check and charge every limit of one request at once: all of them admit it, or none is charged.
-- Twin: app/store/scripts/ratelimit.py (same arithmetic, same replies).
--
-- KEYS, ARGV and the reply: app/ratelimit/protocol.py. Each limit is four arguments:
--   "w", limit, width_us, buckets  a rolling window of buckets * width_us microseconds, kept as
--                                  buckets + 1 counters; a request is admitted when every bucket
--                                  the window can reach (the oldest one counted whole) holds fewer
--                                  than limit, so no window of that length ever holds more.
--   "b", capacity, interval_us, 0  a token bucket (GCRA): one token back every interval_us.
--
-- Window hash: "c" the bucket index of the last charge, "n" the requests in buckets c-K..c, and
-- one field per bucket, named by its slot in a ring of K+1 (index % (K+1)). An admission in the
-- current bucket costs one HMGET and one HSET (redis.call is the script's main cost).
-- Bucket key: the theoretical arrival time (TAT) in microseconds; absent means full.
--
-- Times are whole milliseconds rounded up; numbers written to keys are formatted as integers
-- (Lua's default format keeps only 14 digits).

local cost = tonumber(ARGV[1])
local now
if ARGV[2] ~= nil and ARGV[2] ~= "" then
  now = tonumber(ARGV[2])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- floor(a / b) for integers below 2^53; the correction guards the double division's rounding.
local function floordiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function ms(us)
  if us <= 0 then return 0 end
  return floordiv(us + 999, 1000)
end

local function fmt(x)
  return string.format("%d", x)
end

local plans = {}
local allowed = true
local refused_at, retry = 0, 0
local best, best_remaining = 0, nil

for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local kind, limit = ARGV[a + 1], tonumber(ARGV[a + 2])
  local width, buckets = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local key = KEYS[i]
  local p = {kind = kind, key = key}
  local ok, remaining, reset, wait
  if kind == "w" then
    local ring = buckets + 1
    local c = floordiv(now, width)
    local slot = fmt(c % ring)
    -- One read for the common case: the state and what the current bucket's slot holds.
    local state = redis.call("HMGET", key, "c", "n", slot)
    local last, n = tonumber(state[1]), tonumber(state[2]) or 0
    local in_slot = tonumber(state[3]) or 0
    if last == nil then
      n, in_slot = 0, 0
      p.moved = true
    elseif c < last then
      c = last  -- the clock went back: count into the newest bucket, which only counts more
      slot = fmt(c % ring)
      in_slot = tonumber(redis.call("HGET", key, slot)) or 0
    elseif c > last then
      p.moved = true
      if last < c - buckets then
        p.clear = true  -- every counted bucket has left the window
        n, in_slot = 0, 0
      else
        -- Buckets last-K .. c-K-1 leave the window; their slots are those of the new buckets
        -- last+1 .. c. The last of them (slot(c)) was read above; the others only after a gap.
        n = n - in_slot
        in_slot = 0
        if c - last > 1 then
          local gone = {}
          for b = last + 1, c - 1 do gone[#gone + 1] = fmt(b % ring) end
          local counts = redis.call("HMGET", key, unpack(gone))
          for j = 1, #gone do n = n - (tonumber(counts[j]) or 0) end
          p.gone = gone
        end
      end
    end
    p.c, p.n, p.slot, p.in_slot = c, n, slot, in_slot
    p.ttl = ms((c + ring) * width - now) + 1
    ok = n + cost <= limit
    if ok then
      remaining = limit - n - cost
      if cost > 0 then
        reset = (c + ring) * width - now
      elseif n > 0 then
        reset = (last + ring) * width - now
      else
        reset = 0
      end
    else
      remaining = 0
      reset = (last + ring) * width - now
      -- The oldest buckets leave first: wait until enough of them are gone.
      local live = {}
      for b = c - buckets, last do live[#live + 1] = fmt(b % ring) end
      local counts = redis.call("HMGET", key, unpack(live))
      local excess, freed = n + cost - limit, 0
      wait = reset
      for j = 1, #live do
        freed = freed + (tonumber(counts[j]) or 0)
        if freed >= excess then
          wait = (c - buckets + j - 1 + ring) * width - now
          break
        end
      end
    end
    p.used = n
  else
    local interval = width
    local tat = tonumber(redis.call("GET", key)) or now
    if tat < now then tat = now end
    local new_tat = tat + interval * cost
    local allow_at = new_tat - limit * interval
    ok = allow_at <= now
    if ok then
      remaining = floordiv(now - allow_at, interval)
      reset = new_tat - now
      p.tat = new_tat
      p.ttl = ms(new_tat - now) + 1
    else
      remaining = 0
      reset = tat - now
      wait = allow_at - now
    end
    p.used = limit - floordiv(now - (tat - limit * interval), interval)
  end
  if not ok then
    allowed = false
    if refused_at == 0 or wait > retry then
      refused_at, retry = i, wait
    end
  end
  if best_remaining == nil or remaining < best_remaining then
    best, best_remaining = i, remaining
  end
  p.limit, p.remaining, p.reset = limit, remaining, reset
  plans[i] = p
end

if allowed and cost > 0 then
  for i = 1, #plans do
    local p = plans[i]
    if p.kind == "w" then
      if p.clear then
        redis.call("DEL", p.key)
      elseif p.gone then
        redis.call("HDEL", p.key, unpack(p.gone))
      end
      redis.call("HSET", p.key, p.slot, fmt(p.in_slot + cost), "c", fmt(p.c), "n", fmt(p.n + cost))
      if p.moved then
        -- The key lives until the bucket of its last charge has left: set once per bucket.
        redis.call("PEXPIRE", p.key, fmt(p.ttl))
      end
    else
      redis.call("SET", p.key, fmt(p.tat), "PX", fmt(p.ttl))
    end
  end
end

local shown = refused_at
if shown == 0 then shown = best end
local reply = {0, 0, 0, 0, 0, refused_at}
if allowed then reply[1] = 1 end
reply[2] = ms(retry)
if shown > 0 then
  reply[3] = plans[shown].limit
  reply[4] = plans[shown].remaining
  reply[5] = ms(plans[shown].reset)
end
if cost == 0 then
  for i = 1, #plans do reply[#reply + 1] = plans[i].used end
end
return reply
