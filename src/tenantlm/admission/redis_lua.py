"""The Lua scripts of the Redis LimitStore, as string constants (so they ship inside the wheel with the code).

Redis runs a script atomically: no other command runs between its first read and its last write, which is what
makes "check every level, then consume all or nothing" exact for any number of replicas. Each admission is one
EVALSHA of ADMIT, each settle or release one EVALSHA of SETTLE. The steps mirror :mod:`.memory` and :mod:`.rules`.

Key layout (one tenant's keys share the ``{tenant_id}`` hash tag), passed as KEYS: ``KEYS[1]`` the reservation
record (one string: "rtok rusd tok usd atok ausd held sec done day month"); then three per subject: its window
(hash, see _WINDOW), its in-flight slots (zset request id -> lease expiry), its budget counters for the month (hash
``tok``, ``usd`` in micro-dollars, and one ``d:YYYY-MM-DD`` token field per day). ``-1`` in ARGV means unlimited.

Cost. Inside a script every write command is also recorded for replication, so each key is read once (HMGET) and
written once (HSET of the new values) rather than incremented field by field; TTLs are set when a key is created
or, for windows, at most once a second. A three-level admission runs about 15 commands whatever the traffic.
Numbers leave a script as integers (Lua floats are truncated), so ``now`` comes back as a string; times go in and
out with 17 significant digits, so both stores compare the same floats.
"""

from __future__ import annotations

_COMMON = """
local function num(v, default) local n = tonumber(v); if n == nil then return default end; return n end
local function clock(arg)
  local now = tonumber(arg)
  if now < 0 then local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
  return now
end
-- Lua 5.1 turns a number into a string with "%.14g" (slow float formatting) wherever one is concatenated, so
-- field names are built with integer formatting.
local function field(kind, sec) return string.format('%s%d', kind, sec) end
local function record_get(key)  -- rtok rusd tok usd atok ausd held sec done day month (strings), or nil
  local v = redis.call('GET', key)
  if not v then return nil end
  local f = {}
  for word in string.gmatch(v, '%S+') do f[#f + 1] = word end
  return f
end
local function record_set(key, f, ms)  -- one string with its expiry: one command, no 11-field hash
  redis.call('SET', key, string.format('%d %d %d %d %d %d %d %d %d %s %s', unpack(f)), 'PX', math.ceil(ms))
end
local function refresh_ttl(key, ms)  -- a zset of leases: keep its expiry past the longest lease, lazily
  if redis.call('PTTL', key) < ms - 10000 then redis.call('PEXPIRE', key, ms) end
end
"""

_WINDOW = """
-- A window hash holds per-second buckets ('r<second>' requests, 't<second>' tokens) and running sums:
-- 'lo' the window start the sums refer to, 'sr'/'st' the sums of every bucket >= lo (so "future" buckets of a
-- replica whose clock runs ahead are included), 'nr'/'nt' the newest second written, 'gc' the oldest bucket
-- second not yet deleted. Reading the window at second s advances lo to s - 60 by subtracting only the buckets
-- that left it (usually none or one), so an admission costs the same however busy the window is.
local SPAN = 400  -- beyond this many seconds of gap, recount from the whole hash instead of walking the gap
local function window_ttl(margin) return (61 + margin + 5) * 1000 end

local function both(from, to)  -- the field names of seconds from..to, requests and tokens interleaved
  local out = {}
  for sec = from, to do out[#out + 1] = field('r', sec); out[#out + 1] = field('t', sec) end
  return out
end

local function gap_sums(key, from, to)  -- requests and tokens in the buckets from..to
  if to < from then return 0, 0 end
  local v = redis.call('HMGET', key, unpack(both(from, to)))
  local r, t = 0, 0
  for j = 1, #v, 2 do r = r + (tonumber(v[j]) or 0); t = t + (tonumber(v[j + 1]) or 0) end
  return r, t
end

local function scan(key, from, keep)  -- sums of the buckets >= from, and the names of the buckets < keep
  local flat = redis.call('HGETALL', key)
  local r, t, older = 0, 0, {}
  for j = 1, #flat, 2 do
    local kind, sec = string.sub(flat[j], 1, 1), tonumber(string.sub(flat[j], 2))
    if sec ~= nil then
      if sec < keep then older[#older + 1] = flat[j] end
      if sec >= from and kind == 'r' then r = r + tonumber(flat[j + 1]) end
      if sec >= from and kind == 't' then t = t + tonumber(flat[j + 1]) end
    end
  end
  return r, t, older
end

local function collect(key, s, margin, gc)  -- delete the buckets older than the window plus the skew margin
  local dead = s - 61 - margin
  if gc > dead then return gc end
  if dead - gc > SPAN then
    local _, _, older = scan(key, dead + 1, dead + 1)
    if #older > 0 then redis.call('HDEL', key, unpack(older)) end
  else
    redis.call('HDEL', key, unpack(both(gc, dead)))
  end
  return dead + 1
end

local function read_window(key, s, margin)  -- the window at second s, and the stored state to write back
  local want = s - 60
  local h = redis.call('HMGET', key, 'lo', 'sr', 'st', 'nr', 'nt', 'gc', field('r', s), field('t', s))
  local w = {lo = tonumber(h[1]), sr = num(h[2], 0), st = num(h[3], 0), nr = num(h[4], -1), nt = num(h[5], -1),
             cr = num(h[7], 0), ct = num(h[8], 0), changed = false}
  local gc = tonumber(h[6]) or (want - margin)
  if w.lo == nil or want - w.lo > SPAN then  -- a new or long-idle key: count it whole, drop what is too old
    local older
    gc = want - margin
    w.sr, w.st, older = scan(key, want, gc)
    if #older > 0 then redis.call('HDEL', key, unpack(older)) end
    w.lo, w.changed = want, true
  elseif want > w.lo then
    local r, t = gap_sums(key, w.lo, want - 1)
    w.sr, w.st, w.lo, w.changed = w.sr - r, w.st - t, want, true
  end
  w.r, w.t = w.sr, w.st
  if want < w.lo then  -- this replica's clock is behind the one that advanced lo: count the buckets in between
    local r, t = gap_sums(key, want, w.lo - 1)
    w.r, w.t = w.r + r, w.t + t
  end
  local collected = collect(key, s, margin, gc)
  w.changed = w.changed or collected ~= gc
  w.gc = collected
  return w
end

local function write_window(key, w, s, tokens, margin)  -- the sums, marks and (when admitted) this second's bucket
  local args = {'lo', w.lo, 'sr', w.sr, 'st', w.st, 'gc', w.gc}
  local first_this_second = s > w.nr
  if tokens ~= nil then
    local covered = s >= w.lo and 1 or 0
    args[4], args[6] = w.sr + covered, w.st + covered * tokens
    for _, v in ipairs({field('r', s), w.cr + 1, 'nr', math.max(s, w.nr)}) do args[#args + 1] = v end
    if tokens > 0 then
      for _, v in ipairs({field('t', s), w.ct + tokens, 'nt', math.max(s, w.nt)}) do args[#args + 1] = v end
    end
  elseif not w.changed then
    return
  end
  redis.call('HSET', key, unpack(args))
  if first_this_second or w.changed then redis.call('PEXPIRE', key, window_ttl(margin)) end
end

local function adjust_tokens(key, sec, delta, margin)  -- a settle: one token bucket and its sum
  local h = redis.call('HMGET', key, 'lo', 'st', 'nt', field('t', sec))
  if delta < 0 and not h[4] then return end  -- the bucket has left (a refund has nothing to take from)
  local lo = tonumber(h[1])
  local args = {field('t', sec), num(h[4], 0) + delta}
  if lo ~= nil and sec >= lo then args[3], args[4] = 'st', num(h[2], 0) + delta end
  if delta > 0 and sec > num(h[3], -1) then args[#args + 1] = 'nt'; args[#args + 1] = sec end
  redis.call('HSET', key, unpack(args))
  if delta > 0 then redis.call('PEXPIRE', key, window_ttl(margin)) end
end

local function retry_at(key, kind, s, newest, used, need, limit)  -- buckets leave oldest first, at second + 61
  if need > limit then return -1 end
  if newest >= s - 60 then
    local names = {}
    for sec = s - 60, newest do names[#names + 1] = field(kind, sec) end
    local left = used
    for j, v in ipairs(redis.call('HMGET', key, unpack(names))) do
      local count = tonumber(v) or 0
      left = left - count
      if count > 0 and left + need <= limit then return s - 60 + j - 1 + 61 end
    end
  end
  return s + 61  -- not reached while the sums agree with the buckets
end
"""

ADMIT = _COMMON + _WINDOW + """
-- ARGV: 1 now (<0: server TIME), 2 tokens, 3 micro-dollars, 4 lease s, 5 request id, 6 prune margin s,
--       7 record ttl s, 8 budget ttl s, 9 day period, 10 month period,
--       then 6 per subject: rpm, tpm, max concurrency, daily tokens, monthly tokens, monthly micro-dollars
local now = clock(ARGV[1])
local s = math.floor(now)
local tokens, micro, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rid, margin, day = ARGV[5], tonumber(ARGV[6]), ARGV[9]
local n = (#KEYS - 1) / 3
local now_text = string.format('%.17g', now)

local rec = record_get(KEYS[1])
local dup = rec ~= nil
local out = {dup and 2 or 1, now_text, dup and tonumber(rec[8]) or s, dup and rec[10] or day,
             dup and rec[11] or ARGV[10]}
local fails, wins, budgets = {}, {}, {}
local function fail(i, dim, at) fails[#fails + 1] = i; fails[#fails + 1] = dim; fails[#fails + 1] = at end

for i = 1, n do
  local k, a = 1 + 3 * (i - 1), 10 + 6 * (i - 1)
  local rpm, tpm, conc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local dlim, mlim, clim = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local w = {r = 0, t = 0, nr = -1, nt = -1}
  if rpm >= 0 or tpm >= 0 then w = read_window(KEYS[k + 1], s, margin) end
  wins[i] = w
  local flight = 0
  if conc >= 0 then
    -- leases expired past the skew margin are dropped; the ones still live at this caller's now are counted
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', string.format('%.17g', now - margin))
    flight = redis.call('ZCOUNT', KEYS[k + 2], '(' .. now_text, '+inf')
  end
  local b = redis.call('HMGET', KEYS[k + 3], 'tok', 'usd', day)
  local mtok, musd, dtok = num(b[1], 0), num(b[2], 0), num(b[3], 0)
  budgets[i] = {mtok, musd, dtok, b[1] == false}
  local nr, nt = w.nr, w.nt
  if nr < s - 60 then nr = -1 end
  if nt < s - 60 then nt = -1 end
  for _, v in ipairs({w.r, w.t, nr, nt, flight, dtok, mtok, musd}) do out[#out + 1] = v end
  if not dup then
    if rpm >= 0 and w.r + 1 > rpm then fail(i, 1, retry_at(KEYS[k + 1], 'r', s, w.nr, w.r, 1, rpm)) end
    if tpm >= 0 and w.t + tokens > tpm then fail(i, 2, retry_at(KEYS[k + 1], 't', s, w.nt, w.t, tokens, tpm)) end
    if conc >= 0 and flight + 1 > conc then fail(i, 3, 0) end
    if dlim >= 0 and dtok + tokens > dlim then fail(i, 4, 0) end
    if mlim >= 0 and mtok + tokens > mlim then fail(i, 5, 0) end
    if clim >= 0 and musd + micro > clim then fail(i, 6, 0) end
  end
end

local admitted = not dup and #fails == 0
for i = 1, n do
  local k, a = 1 + 3 * (i - 1), 10 + 6 * (i - 1)
  if tonumber(ARGV[a + 1]) >= 0 or tonumber(ARGV[a + 2]) >= 0 then
    write_window(KEYS[k + 1], wins[i], s, admitted and tokens or nil, margin)
  end
  if admitted then
    if tonumber(ARGV[a + 3]) >= 0 then
      redis.call('ZADD', KEYS[k + 2], string.format('%.17g', now + lease), rid)
      refresh_ttl(KEYS[k + 2], math.ceil((lease + 60) * 1000))
    end
    local b = budgets[i]
    redis.call('HSET', KEYS[k + 3], 'tok', b[1] + tokens, 'usd', b[2] + micro, day, b[3] + tokens)
    if b[4] then redis.call('PEXPIRE', KEYS[k + 3], tonumber(ARGV[8]) * 1000) end
  end
end
if admitted then
  record_set(KEYS[1], {tokens, micro, tokens, micro, 0, 0, tokens, s, 0, day, ARGV[10]},
             (lease + tonumber(ARGV[7])) * 1000)
end

out[#out + 1] = #fails / 3
for _, v in ipairs(fails) do out[#out + 1] = v end
return out
"""

SETTLE = _COMMON + _WINDOW + """
-- ARGV: 1 now (<0: server TIME), 2 tokens, 3 micro-dollars (actual, cumulative), 4 mode (0 streaming, 1 final,
--       2 release), 5 lease s, 6 request id, 7 record ttl s, 8 budget ttl s, 9 reserved tokens,
--       10 reserved micro-dollars, 11 admission bucket second (the ticket's, used when the record is gone),
--       12 prune margin s, 13 day period, then 5 per subject: windowed (1/0), slotted (1/0), daily tokens,
--       monthly tokens, monthly micro-dollars (-1 unlimited)
local now = clock(ARGV[1])
local s = math.floor(now)
local tokens, micro, mode, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rid, margin, day = ARGV[6], tonumber(ARGV[12]), ARGV[13]
local n = (#KEYS - 1) / 3
local f = record_get(KEYS[1]) or {}  -- gone (expired): assume the ticket's reservation stands
local rtok, rusd = num(f[1], tonumber(ARGV[9])), num(f[2], tonumber(ARGV[10]))
local tok, usd, atok, ausd = num(f[3], rtok), num(f[4], rusd), num(f[5], 0), num(f[6], 0)
local held, sec, done = num(f[7], rtok), num(f[8], tonumber(ARGV[11])), f[9] == '1'

local function targets(reserved, before, reported)  -- see rules.settle_targets
  if mode == 0 then
    local actual = math.max(before, reported)
    return math.max(reserved, actual), actual
  end
  local actual = before
  if mode == 1 then actual = reported end
  return actual, actual
end

local dt, du, refund = 0, 0, 0
local extra, extra_usd = 0, 0
if not done then
  local ttok, tusd
  ttok, atok = targets(rtok, atok, tokens)
  tusd, ausd = targets(rusd, ausd, micro)
  dt, du = ttok - tok, tusd - usd
  if dt < 0 then refund = math.min(-dt, held); held = held - refund end
  extra, extra_usd = ttok - atok, tusd - ausd
  record_set(KEYS[1], {rtok, rusd, ttok, tusd, atok, ausd, held, sec, mode ~= 0 and 1 or 0, f[10] or '-',
                       f[11] or '-'}, (lease + tonumber(ARGV[7])) * 1000)
end

-- per subject: window, slot, budgets; then the headroom per budget (its remainder plus the unused reservation)
local out = {done and 0 or 1}
for i = 1, n do
  local k, a = 1 + 3 * (i - 1), 13 + 5 * (i - 1)
  if not done and ARGV[a + 1] == '1' then
    if refund > 0 then adjust_tokens(KEYS[k + 1], sec, -refund, margin) end
    if dt > 0 then adjust_tokens(KEYS[k + 1], s, dt, margin) end
  end
  if not done and ARGV[a + 2] == '1' then
    if mode ~= 0 then
      redis.call('ZREM', KEYS[k + 2], rid)
    else
      local expiry = tonumber(redis.call('ZSCORE', KEYS[k + 2], rid))
      if expiry ~= nil and expiry > now then  -- a lease renews while live; an expired one stays expired
        redis.call('ZADD', KEYS[k + 2], 'XX', string.format('%.17g', now + lease), rid)
        refresh_ttl(KEYS[k + 2], math.ceil((lease + 60) * 1000))
      end
    end
  end
  local b = redis.call('HMGET', KEYS[k + 3], 'tok', 'usd', day)
  local mtok, musd, dtok = num(b[1], 0), num(b[2], 0), num(b[3], 0)
  if not done and (dt ~= 0 or du ~= 0) then  -- counters never go below zero
    mtok, musd, dtok = math.max(0, mtok + dt), math.max(0, musd + du), math.max(0, dtok + dt)
    redis.call('HSET', KEYS[k + 3], 'tok', mtok, 'usd', musd, day, dtok)
    if b[1] == false then redis.call('PEXPIRE', KEYS[k + 3], tonumber(ARGV[8]) * 1000) end
  end
  local dlim, mlim, clim = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  for _, v in ipairs({dlim >= 0 and 1 or 0, dlim - dtok + extra, mlim >= 0 and 1 or 0, mlim - mtok + extra,
                      clim >= 0 and 1 or 0, clim - musd + extra_usd}) do out[#out + 1] = v end
end
return out
"""

SEED = """
-- KEYS[1]: a subject's month budget hash; ARGV: 1 tokens field ('tok' or a 'd:YYYY-MM-DD' day), 2 tokens,
-- 3 micro-dollars (-1: leave cost alone), 4 ttl s. Raises the counters, never lowers them.
local cur = redis.call('HMGET', KEYS[1], ARGV[1], 'usd')
if (tonumber(cur[1]) or 0) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if tonumber(ARGV[3]) >= 0 and (tonumber(cur[2]) or 0) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'usd', ARGV[3])
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) * 1000 then redis.call('PEXPIRE', KEYS[1], ARGV[4] * 1000) end
return 1
"""
