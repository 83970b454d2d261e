#!lua name=flowfabric_v1

-- FlowFabric's Valkey/Redis store library, version 1. It holds storage, not business logic:
-- the engine (Go) decides every transition and hands the store a unit; these functions
-- only check that what a unit read still holds and apply its writes, all or nothing.
-- Keys and arguments are laid out by ffstore/ffvalkey (tx.go, keys.go). Every key a
-- function touches is declared in KEYS and, except in ffv1_heads on a standalone server,
-- carries one shard's hash tag. Function names carry the version, so that two versions
-- of the library can be loaded side by side during a rolling upgrade; any change to a
-- function's keys, arguments or behaviour gets a new version.

-- A pop mark is a 13-digit deadline in ms followed by the token of the unit holding it.
local MARK_DIGITS = 13

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- hidden reports whether a queue item carrying pop mark `mark` is hidden from the unit
-- with `token`: its own pops, and the unexpired pops of other units.
local function hidden(mark, token, now)
  if not mark then
    return false
  end
  if string.sub(mark, MARK_DIGITS + 1) == token then
    return true
  end
  return tonumber(string.sub(mark, 1, MARK_DIGITS)) > now
end

-- visible returns the items of `items` (encoded ZSET members) not hidden from `token`,
-- appending to `out` until it holds `limit`.
local function visible(m, items, token, now, out, limit)
  if #items == 0 then
    return
  end
  local members = {}
  for k, enc in ipairs(items) do
    members[k] = string.sub(enc, 9)
  end
  local marks = redis.call('HMGET', m, unpack(members))
  for k, enc in ipairs(items) do
    if #out >= limit then
      return
    end
    if not hidden(marks[k], token, now) then
      out[#out + 1] = enc
    end
  end
end

-- ffv1_pop marks up to n due items of a queue as popped by one unit and returns them,
-- with the next `look` items the unit can see after them. Nothing leaves the queue: the
-- unit's commit removes the items if their marks are still its own, and an unfinished
-- unit's marks expire after `ttl` ms. Items marked by other units are skipped.
-- KEYS: queue, marks. ARGV: end bound, n, token, ttl, look.
-- Returns {popped, lookahead, complete} where complete is 1 if the lookahead reaches the
-- end of the queue.
redis.register_function('ffv1_pop', function(keys, argv)
  local z, m = keys[1], keys[2]
  local upto, n, token, ttl, look = argv[1], tonumber(argv[2]), argv[3], tonumber(argv[4]), tonumber(argv[5])
  local now = now_ms()
  local mark = string.format('%013d', now + ttl) .. token
  local popped = {}
  local from, batch = '-', math.min(n, 1000) + 16
  while #popped < n do
    local items = redis.call('ZRANGE', z, from, upto, 'BYLEX', 'LIMIT', 0, batch)
    visible(m, items, token, now, popped, n)
    if #items < batch then
      break
    end
    from = '(' .. items[#items]
  end
  for _, enc in ipairs(popped) do
    redis.call('HSET', m, string.sub(enc, 9), mark)
  end
  local ahead, complete = {}, 0
  if look > 0 then
    from = '-'
    if #popped > 0 then
      from = '(' .. popped[#popped]
    end
    batch = math.min(look, 1000) + 16
    while true do
      local items = redis.call('ZRANGE', z, from, '+', 'BYLEX', 'LIMIT', 0, batch)
      visible(m, items, token, now, ahead, look)
      if #ahead >= look then
        break
      end
      if #items < batch then
        complete = 1
        break
      end
      from = '(' .. items[#items]
    end
  end
  return {popped, ahead, complete}
end)

-- ffv1_range returns up to n items of a queue between two bounds that the unit with
-- `token` can see (see hidden).
-- KEYS: queue, marks. ARGV: start bound, end bound, n, token.
redis.register_function{function_name = 'ffv1_range', flags = {'no-writes'}, callback = function(keys, argv)
  local z, m = keys[1], keys[2]
  local from, upto, n, token = argv[1], argv[2], tonumber(argv[3]), argv[4]
  local now = now_ms()
  local out = {}
  while #out < n do
    local batch = math.min(n - #out, 1000) + 16
    local items = redis.call('ZRANGE', z, from, upto, 'BYLEX', 'LIMIT', 0, batch)
    visible(m, items, token, now, out, n)
    if #items < batch then
      break
    end
    from = '(' .. items[#items]
  end
  return out
end}

-- ffv1_heads returns, per shard, the first item of every non-empty queue whose name lies
-- in one of the given name ranges.
-- KEYS: directory and heads of each shard, in pairs. ARGV: start and end bounds, in pairs.
-- Returns one array per shard: name, encoded item, name, encoded item...
redis.register_function{function_name = 'ffv1_heads', flags = {'no-writes'}, callback = function(keys, argv)
  local out = {}
  for s = 1, #keys / 2 do
    local dir, heads = keys[2 * s - 1], keys[2 * s]
    local found = {}
    for p = 1, #argv, 2 do
      local names = redis.call('ZRANGE', dir, argv[p], argv[p + 1], 'BYLEX')
      for from = 1, #names, 1000 do
        local chunk = {}
        for k = from, math.min(from + 999, #names) do
          chunk[#chunk + 1] = names[k]
        end
        local hs = redis.call('HMGET', heads, unpack(chunk))
        for k, name in ipairs(chunk) do
          if hs[k] then
            found[#found + 1] = name
            found[#found + 1] = hs[k]
          end
        end
      end
    end
    out[s] = found
  end
  return out
end}

-- A unit. KEYS: 1 commit counter, 2 delete counter, 3 event seq, 4 event stream,
-- 5 queue directory, 6 queue heads, then the unit's nR record keys, then three keys per
-- queue it touched (items, scores, marks).
-- ARGV: mode ('c' commit, 'a' abort: check and release the unit's pops, 'v' check only),
-- channel to publish on ('' for none), the unit's token, '=' followed by the delete
-- counter to expect ('' for no check), nR, nQ, the nQ queue names, then counted lists:
--   record checks   (key index, expected version; '' expects no record)
--   range checks    (queue index, encoded item expected in the queue)
--   pops            (queue index, encoded item the unit popped)
--   record puts     (key index, value)
--   record deletes  (key index)
--   queue writes    (queue index, member, encoded score; '' removes the member)
--   events          (encoded event)
-- Returns {1, ''} when it committed (or, for 'a' and 'v', the reads held) and
-- {0, reason} when a read no longer holds; then nothing was written except, for 'c' and
-- 'a', the release of the unit's pop marks.
local function unit(keys, argv)
  local mode, channel, token, expdel = argv[1], argv[2], argv[3], argv[4]
  local nR, nQ = tonumber(argv[5]), tonumber(argv[6])
  local qbase = 6 + nR
  local names = {}
  for j = 1, nQ do
    names[j] = argv[6 + j]
  end
  local i = 7 + nQ
  local reason = nil

  if expdel ~= '' and '=' .. (redis.call('GET', keys[2]) or '') ~= expdel then
    reason = 'a record was deleted'
  end
  local n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    if not reason and redis.call('GETRANGE', keys[6 + tonumber(argv[i])], 0, 7) ~= argv[i + 1] then
      reason = 'a record changed'
    end
    i = i + 2
  end
  n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    if not reason and not redis.call('ZSCORE', keys[qbase + 3 * tonumber(argv[i]) - 2], argv[i + 1]) then
      reason = 'a queue item it read is gone'
    end
    i = i + 2
  end
  n = tonumber(argv[i])
  i = i + 1
  local pops = {}
  for _ = 1, n do
    local b = qbase + 3 * tonumber(argv[i])
    local enc = argv[i + 1]
    local member = string.sub(enc, 9)
    pops[#pops + 1] = {b, enc, member}
    if not reason then
      local mark = redis.call('HGET', keys[b], member)
      if not mark or string.sub(mark, MARK_DIGITS + 1) ~= token or not redis.call('ZSCORE', keys[b - 2], enc) then
        reason = 'a popped item was taken by another unit'
      end
    end
    i = i + 2
  end

  if reason or mode ~= 'c' then
    if mode ~= 'v' then
      for _, p in ipairs(pops) do
        local mark = redis.call('HGET', keys[p[1]], p[3])
        if mark and string.sub(mark, MARK_DIGITS + 1) == token then
          redis.call('HDEL', keys[p[1]], p[3])
        end
      end
    end
    if reason then
      return {0, reason}
    end
    return {1, ''}
  end

  -- Events first: XADD is the one write that can be refused (an id not above the
  -- stream's last), and nothing else has been written when it is.
  local nP = tonumber(argv[i])
  local iP = i + 1
  i = iP + 2 * nP
  local nD = tonumber(argv[i])
  local iD = i + 1
  i = iD + nD
  local nW = tonumber(argv[i])
  local iW = i + 1
  i = iW + 3 * nW
  local nE = tonumber(argv[i])
  if nE > 0 then
    local first = tonumber(redis.call('GET', keys[3]) or '0') + 1
    for k = 0, nE - 1 do
      redis.call('XADD', keys[4], string.format('%d-0', first + k), 'e', argv[i + 1 + k])
    end
    redis.call('SET', keys[3], string.format('%d', first + nE - 1))
  end

  if nP > 0 then
    local ver = struct.pack('>I8', redis.call('INCR', keys[1]))
    for k = iP, iP + 2 * nP - 1, 2 do
      redis.call('SET', keys[6 + tonumber(argv[k])], ver .. argv[k + 1])
    end
  end
  local deleted = 0
  for k = iD, iD + nD - 1 do
    deleted = deleted + redis.call('DEL', keys[6 + tonumber(argv[k])])
  end
  if deleted > 0 then
    redis.call('INCR', keys[2])
  end

  local touched, seen = {}, {}
  local function touch(b)
    if not seen[b] then
      seen[b] = true
      touched[#touched + 1] = b
    end
  end
  for _, p in ipairs(pops) do
    redis.call('ZREM', keys[p[1] - 2], p[2])
    redis.call('HDEL', keys[p[1] - 1], p[3])
    redis.call('HDEL', keys[p[1]], p[3])
    touch(p[1])
  end
  for k = iW, iW + 3 * nW - 1, 3 do
    local b = qbase + 3 * tonumber(argv[k])
    local member, score = argv[k + 1], argv[k + 2]
    local old = redis.call('HGET', keys[b - 1], member)
    if score == '' then
      if old then
        redis.call('ZREM', keys[b - 2], old .. member)
        redis.call('HDEL', keys[b - 1], member)
        redis.call('HDEL', keys[b], member)
        touch(b)
      end
    elseif old ~= score then
      if old then
        redis.call('ZREM', keys[b - 2], old .. member)
      end
      redis.call('ZADD', keys[b - 2], 0, score .. member)
      redis.call('HSET', keys[b - 1], member, score)
      redis.call('HDEL', keys[b], member)
      touch(b)
    end
  end
  for _, b in ipairs(touched) do
    local name = names[(b - qbase) / 3]
    local head = redis.call('ZRANGE', keys[b - 2], 0, 0)
    if head[1] then
      redis.call('HSET', keys[6], name, head[1])
      redis.call('ZADD', keys[5], 0, name)
    else
      redis.call('HDEL', keys[6], name)
      redis.call('ZREM', keys[5], name)
      redis.call('DEL', keys[b])
    end
  end

  if channel ~= '' then
    redis.call('PUBLISH', channel, '1')
  end
  return {1, ''}
end

redis.register_function('ffv1_unit', unit)
redis.register_function{function_name = 'ffv1_check', flags = {'no-writes'}, callback = function(keys, argv)
  if argv[1] ~= 'v' then
    return redis.error_reply('ERR ffv1_check only checks')
  end
  return unit(keys, argv)
end}

-- ffv1_trim deletes the events with Seq at most `through` (at most the last one) and
-- raises the trim point; it never lowers it.
-- KEYS: event seq, trim point, event stream. ARGV: through.
redis.register_function('ffv1_trim', function(keys, argv)
  local last = tonumber(redis.call('GET', keys[1]) or '0')
  local through = math.min(tonumber(argv[1]), last)
  local trimmed = tonumber(redis.call('GET', keys[2]) or '0')
  if through > trimmed then
    redis.call('SET', keys[2], string.format('%d', through))
    redis.call('XTRIM', keys[3], 'MINID', string.format('%d-0', through + 1))
  end
  return 1
end)
