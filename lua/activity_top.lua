-- The busiest clients of the fleet: requests in the current window and the one before
-- (lua/activity_add.lua), the most first, ties by client id.
-- KEYS, ARGV and the reply: app/control/activity_protocol.py.
local window = tonumber(ARGV[1])
local epoch = math.floor(tonumber(redis.call('TIME')[1]) / window)
local seen = tonumber(redis.call('HGET', KEYS[3], 'epoch') or '-1')
local sources = {}
if seen == epoch then
  sources = {KEYS[1], KEYS[2]}
elseif seen == epoch - 1 then
  sources = {KEYS[1]}  -- nothing was added in this window yet: the "current" set is the previous one
end
local totals = {}
for _, key in ipairs(sources) do
  local flat = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    totals[flat[i]] = (totals[flat[i]] or 0) + tonumber(flat[i + 1])
  end
end
local list = {}
for client, count in pairs(totals) do
  list[#list + 1] = {client, count}
end
table.sort(list, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] < b[1]
end)
local out = {}
for i = 1, math.min(tonumber(ARGV[2]), #list) do
  out[#out + 1] = list[i][1]
  out[#out + 1] = list[i][2]
end
return out
