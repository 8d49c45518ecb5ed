-- Atomic check-and-reserve (mode "r") and settle (mode "s") of token
-- buckets, one Redis hash per subject. The arithmetic mirrors bucket.go.
--
-- KEYS[i]  hash of subject i: r = request level, t = token level,
--          ts = time of both levels (µs). An absent hash or field is full.
-- ARGV[1]  mode: "r" reserve, "s" settle
-- ARGV[2]  now in µs; "0" = the server's TIME (the normal case: one clock
--          for every instance)
-- ARGV[3]  reserve: estimated tokens; settle: estimated − actual
-- then per key, 5 values: requests/s, request burst, tokens/s, token
--          burst, shadow ("1" = count, do not enforce)
--
-- Reserve returns {allowed, wait_us, deny_index, deny_kind,
--   shadow_index, shadow_kind, shadow_wait_us,
--   then per key: req_remaining, req_reset_us, tok_remaining, tok_reset_us}
-- (kinds: 1 requests, 2 tokens; indexes 1-based, 0 = none; remaining may be
-- negative for a bucket in debt). Nothing is written unless allowed.
-- Settle returns an empty array.
local mode = ARGV[1]
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[3])
local eps = 1e-9

local function level(v, ts, rate, burst)
  if v == nil then return burst end
  local dt = now - ts
  if dt < 0 then dt = 0 end
  return math.min(burst, v + dt * rate / 1e6)
end

local function full_in(b, rl, tl) -- µs until both buckets are full
  local s = 0
  if b.rr > 0 then s = (b.rb - rl) / b.rr end
  if b.tr > 0 then s = math.max(s, (b.tb - tl) / b.tr) end
  return math.max(s, 0) * 1e6
end

local function write(key, b, rl, tl)
  -- %.17g keeps every bit of a level; %d every µs of a timestamp
  -- (tostring would round both to 14 digits).
  redis.call('HSET', key, 'r', string.format('%.17g', rl), 't', string.format('%.17g', tl),
             'ts', string.format('%d', math.max(b.ts, now)))
  -- An idle subject expires once full again: an absent hash is full.
  redis.call('PEXPIRE', key, math.ceil(full_in(b, rl, tl) / 1000) + 1000)
end

local bs = {}
for i = 1, #KEYS do
  local a = 4 + (i - 1) * 5
  local b = {rr = tonumber(ARGV[a]), rb = tonumber(ARGV[a + 1]),
             tr = tonumber(ARGV[a + 2]), tb = tonumber(ARGV[a + 3]),
             shadow = ARGV[a + 4] == '1'}
  local h = redis.call('HMGET', KEYS[i], 'r', 't', 'ts')
  b.ts = tonumber(h[3]) or now
  b.rl = level(tonumber(h[1]), b.ts, b.rr, b.rb)
  b.tl = level(tonumber(h[2]), b.ts, b.tr, b.tb)
  bs[i] = b
end

if mode == 's' then
  for i = 1, #KEYS do
    local b = bs[i]
    if b.tr > 0 then
      write(KEYS[i], b, b.rl, math.min(b.tl + cost, b.tb))
    end
  end
  return {}
end

local wait, deny, deny_kind = 0, 0, 0
local swait, sdeny, sdeny_kind = 0, 0, 0
for i = 1, #KEYS do
  local b = bs[i]
  b.wait, b.kind = 0, 0
  if b.rr > 0 and b.rl < 1 - eps then
    b.wait, b.kind = (1 - b.rl) / b.rr, 1
  end
  if b.tr > 0 then
    local need = math.min(cost, b.tb)
    if b.tl < need - eps then
      local w = (need - b.tl) / b.tr
      if w > b.wait then b.wait, b.kind = w, 2 end
    end
  end
  if b.wait > 0 then
    if b.shadow then
      if b.wait > swait then swait, sdeny, sdeny_kind = b.wait, i, b.kind end
    elseif b.wait > wait then
      wait, deny, deny_kind = b.wait, i, b.kind
    end
  end
end

local allowed = 0
if deny == 0 then
  allowed = 1
  for i = 1, #KEYS do
    local b = bs[i]
    if not (b.shadow and b.wait > 0) then
      if b.rr > 0 then b.rl = b.rl - 1 end
      if b.tr > 0 then b.tl = b.tl - cost end
      write(KEYS[i], b, b.rl, b.tl)
    end
  end
end

local out = {allowed, math.ceil(wait * 1e6), deny, deny_kind, sdeny, sdeny_kind, math.ceil(swait * 1e6)}
for i = 1, #KEYS do
  local b = bs[i]
  local rreset, treset = 0, 0
  if b.rr > 0 then rreset = math.ceil(math.max(b.rb - b.rl, 0) / b.rr * 1e6) end
  if b.tr > 0 then treset = math.ceil(math.max(b.tb - b.tl, 0) / b.tr * 1e6) end
  local n = #out
  out[n + 1] = math.floor(b.rl + eps)
  out[n + 2] = rreset
  out[n + 3] = math.floor(b.tl + eps)
  out[n + 4] = treset
end
return out
