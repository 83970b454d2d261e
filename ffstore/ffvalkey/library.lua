#!lua name=flowfabric_v2

-- FlowFabric's Valkey/Redis store library, version 2. It holds storage, not business logic:
-- the engine (Go) decides every transition and hands the store a unit; these functions
-- only check that what a unit read still holds and apply its writes, all or nothing.
-- Keys and arguments are laid out by ffstore/ffvalkey (tx.go, keys.go). Every key a
-- function touches is declared in KEYS and carries one shard's hash tag. Function names
-- carry the version, so that two versions of the library can be loaded side by side
-- during a rolling upgrade; any change to a function's keys, arguments or behaviour gets
-- a new version.
--
-- Queue items are ZSET members that all score 0: 8 bytes of score that sort like the
-- int64 they encode, then the member. Lua compares strings with strcoll, so byte order
-- is compared with le8, never with <.

-- A pop mark is a 13-digit deadline in ms followed by the token of the unit holding it.
local MARK_DIGITS = 13

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- le8 reports whether the first 8 bytes of a sort at or before the 8 bytes of b.
local function le8(a, b)
  for i = 1, 8 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return true
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

-- marks_of returns the pop marks of items (encoded ZSET members), and their members.
local function marks_of(m, items)
  local members = {}
  for k, enc in ipairs(items) do
    members[k] = string.sub(enc, 9)
  end
  return redis.call('HMGET', m, unpack(members)), members
end

-- ffv2_pop marks up to n due items of a queue as popped by one unit and returns them,
-- with the next `look` items after them that the unit can see. Nothing leaves the queue:
-- the unit's commit removes the items if their marks are still its own, and an
-- unfinished unit's marks lapse after `ttl` ms. Items other units are popping are
-- skipped.
-- KEYS: queue items, pop marks. ARGV: the largest due score (8 bytes; '' for any), n,
-- token, ttl, look.
-- Returns {popped, lookahead, complete}; complete is 1 if the lookahead reaches the end.
redis.register_function('ffv2_pop', function(keys, argv)
  local z, m = keys[1], keys[2]
  local upto, n, token, ttl, look = argv[1], tonumber(argv[2]), argv[3], tonumber(argv[4]), tonumber(argv[5])
  local now = now_ms()
  local popped, ahead, due, complete = {}, {}, true, 0
  local from, batch = '-', math.min(n + look, 1000) + 16
  while true do
    local items = redis.call('ZRANGE', z, from, '+', 'BYLEX', 'LIMIT', 0, batch)
    if #items > 0 then
      local marks = marks_of(m, items)
      for k, enc in ipairs(items) do
        if not hidden(marks[k], token, now) then
          if due and #popped < n and (upto == '' or le8(enc, upto)) then
            popped[#popped + 1] = enc
          else
            due = false
            if #ahead < look then
              ahead[#ahead + 1] = enc
            end
          end
        end
        if not due and #ahead >= look then
          break
        end
      end
    end
    if #popped >= n then
      due = false
    end
    if not due and #ahead >= look then
      break
    end
    if #items < batch then
      complete = 1
      break
    end
    from = '(' .. items[#items]
  end
  local mark = string.format('%013d', now + ttl) .. token
  for from = 1, #popped, 500 do
    local fields = {}
    for k = from, math.min(from + 499, #popped) do
      fields[#fields + 1] = string.sub(popped[k], 9)
      fields[#fields + 1] = mark
    end
    redis.call('HSET', m, unpack(fields))
  end
  return {popped, ahead, complete}
end)

-- ffv2_release removes every pop mark of one unit from some queues: for a unit that
-- does not know what its last pop marked (the reply was lost).
-- KEYS: pop marks of each queue. ARGV: token.
redis.register_function('ffv2_release', function(keys, argv)
  local token = argv[1]
  local released = 0
  for _, m in ipairs(keys) do
    local all = redis.call('HGETALL', m)
    for k = 1, #all, 2 do
      if string.sub(all[k + 1], MARK_DIGITS + 1) == token then
        released = released + redis.call('HDEL', m, all[k])
      end
    end
  end
  return released
end)

-- ffv2_range returns up to n items of a queue after a start bound, with scores up to a
-- limit, that the unit with `token` can see (see hidden).
-- KEYS: queue items, pop marks. ARGV: start bound, the largest score (8 bytes; '' for
-- any), n, token.
redis.register_function{function_name = 'ffv2_range', flags = {'no-writes'}, callback = function(keys, argv)
  local z, m = keys[1], keys[2]
  local from, upto, n, token = argv[1], argv[2], tonumber(argv[3]), argv[4]
  local now = now_ms()
  local out = {}
  while #out < n do
    local batch = math.min(n - #out, 1000) + 16
    local items = redis.call('ZRANGE', z, from, '+', 'BYLEX', 'LIMIT', 0, batch)
    if #items == 0 then
      break
    end
    local marks = marks_of(m, items)
    for k, enc in ipairs(items) do
      if upto ~= '' and not le8(enc, upto) then
        return out
      end
      if not hidden(marks[k], token, now) then
        out[#out + 1] = enc
        if #out >= n then
          return out
        end
      end
    end
    if #items < batch then
      break
    end
    from = '(' .. items[#items]
  end
  return out
end}

-- last_seq returns the Seq of the last event in a stream (ids "0-<seq>"), or 0.
local function last_seq(stream)
  local e = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if e[1] then
    return tonumber(string.match(e[1][1], '%-(%d+)$'))
  end
  return 0
end

-- A unit. KEYS: 1 commit counter, 2 delete counter, 3 event stream, 4 queue directory,
-- 5 hinted queues, then the unit's nR record keys, then three keys per queue it touched
-- (items, scores, pop marks).
-- ARGV: mode ('c' commit, 'a' abort: check and release the unit's pops, 'v' check only),
-- channel to publish on ('' for none) and the message, the unit's token, '=' and the
-- delete counter to expect ('' for no check), nR, nQ, the nQ queue names, then counted
-- lists:
--   record checks   (key index, expected version; '' expects no record)
--   range checks    (queue index, encoded item expected in the queue)
--   pops            (queue index, encoded item the unit popped)
--   record puts     (key index, value)
--   record deletes  (key index)
--   queue writes    (queue index, member, encoded score; '' removes the member)
--   events          (encoded event)
-- Returns {0, reason} when a read no longer holds: then nothing was written except, for
-- 'c' and 'a', the release of the unit's pop marks. Otherwise {1, ''} for 'a' and 'v',
-- and for 'c' {1, '', commit number, the names of the queues to add to the store's hint
-- (see below), then for each queue written its name and new first item ('' when empty)}.
local function unit(keys, argv)
  local mode, channel, message, token, expdel = argv[1], argv[2], argv[3], argv[4], argv[5]
  local nR, nQ = tonumber(argv[6]), tonumber(argv[7])
  local qbase = 5 + nR
  local i = 8 + nQ
  local reason = nil

  if expdel ~= '' and '=' .. (redis.call('GET', keys[2]) or '') ~= expdel then
    reason = 'a record was deleted'
  end
  local n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    if not reason and redis.call('GETRANGE', keys[5 + tonumber(argv[i])], 0, 7) ~= argv[i + 1] then
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
    local q = tonumber(argv[i])
    local b = qbase + 3 * q
    local enc = argv[i + 1]
    local member = string.sub(enc, 9)
    pops[#pops + 1] = {b, enc, member, q}
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

  -- Events first: XADD is the one write that could be refused, and nothing else has
  -- been written when it is. Ids "0-*" take the stream's next sequence number, so the
  -- log's Seq is gap-free.
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
  for k = i + 1, i + nE do
    redis.call('XADD', keys[3], '0-*', 'e', argv[k])
  end

  -- Records go in batches of up to 500, within what unpack can pass to one call.
  local ver = redis.call('INCR', keys[1])
  local stamp = struct.pack('>I8', ver)
  for from = 0, nP - 1, 500 do
    local kv = {}
    for k = iP + 2 * from, iP + 2 * math.min(from + 500, nP) - 1, 2 do
      kv[#kv + 1] = keys[5 + tonumber(argv[k])]
      kv[#kv + 1] = stamp .. argv[k + 1]
    end
    redis.call('MSET', unpack(kv))
  end
  local deleted = 0
  for from = 0, nD - 1, 500 do
    local del = {}
    for k = iD + from, iD + math.min(from + 500, nD) - 1 do
      del[#del + 1] = keys[5 + tonumber(argv[k])]
    end
    deleted = deleted + redis.call('DEL', unpack(del))
  end
  if deleted > 0 then
    redis.call('INCR', keys[2])
  end

  local touched, seen, added = {}, {}, {}
  local function touch(q)
    if not seen[q] then
      seen[q] = true
      touched[#touched + 1] = q
    end
  end
  for _, p in ipairs(pops) do
    redis.call('ZREM', keys[p[1] - 2], p[2])
    redis.call('HDEL', keys[p[1] - 1], p[3])
    redis.call('HDEL', keys[p[1]], p[3])
    touch(p[4])
  end
  for k = iW, iW + 3 * nW - 1, 3 do
    local q = tonumber(argv[k])
    local b = qbase + 3 * q
    local member, score = argv[k + 1], argv[k + 2]
    local old = redis.call('HGET', keys[b - 1], member)
    if score == '' then
      if old then
        redis.call('ZREM', keys[b - 2], old .. member)
        redis.call('HDEL', keys[b - 1], member)
        touch(q)
      end
    elseif old ~= score then
      if old then
        redis.call('ZREM', keys[b - 2], old .. member)
      end
      local enc = score .. member
      redis.call('ZADD', keys[b - 2], 0, enc)
      redis.call('HSET', keys[b - 1], member, score)
      added[enc] = q
      touch(q)
    end
  end
  -- Keep the directory of non-empty queues, and report each written queue's new head.
  -- A head that this commit added may be earlier than the one readers knew: the message
  -- says so, so that other processes refresh what they cached. A queue that becomes
  -- non-empty and is not in the hinted set is added to it and reported, for the caller
  -- to add to the store's hint of non-empty shards (a key on another slot).
  local hints = {}
  local out = {1, '', ver, hints}
  local earlier = false
  for _, q in ipairs(touched) do
    local b = qbase + 3 * q
    local name = argv[7 + q]
    local head = redis.call('ZRANGE', keys[b - 2], 0, 0)[1]
    out[#out + 1] = name
    if head then
      out[#out + 1] = head
      if added[head] then
        earlier = true
        if redis.call('ZADD', keys[4], 'NX', 0, name) == 1 and redis.call('SADD', keys[5], name) == 1 then
          hints[#hints + 1] = name
        end
      end
    else
      out[#out + 1] = ''
      redis.call('ZREM', keys[4], name)
      redis.call('DEL', keys[b])
    end
  end

  if channel ~= '' then
    if earlier then
      message = message .. ':h'
    end
    redis.call('PUBLISH', channel, message)
  end
  return out
end

redis.register_function('ffv2_unit', unit)
redis.register_function{function_name = 'ffv2_check', flags = {'no-writes'}, callback = function(keys, argv)
  if argv[1] ~= 'v' then
    return redis.error_reply('ERR ffv2_check only checks')
  end
  return unit(keys, argv)
end}

-- ffv2_unhint is the shard's half of removing queues from the store's hint, run after
-- they were taken out of it: of the queues named, those that are empty (not in the
-- directory) leave the hinted set, so that the commit that next fills one reports it;
-- the names of the others, non-empty again meanwhile, are returned for the caller to put
-- back.
-- KEYS: queue directory, hinted queues. ARGV: queue names.
redis.register_function('ffv2_unhint', function(keys, argv)
  local back = {}
  for _, name in ipairs(argv) do
    if redis.call('ZSCORE', keys[1], name) then
      back[#back + 1] = name
    else
      redis.call('SREM', keys[2], name)
    end
  end
  return back
end)

-- ffv2_trim deletes the events with Seq at most `through` (at most the last one) and
-- raises the trim point; it never lowers it.
-- KEYS: trim point, event stream. ARGV: through.
redis.register_function('ffv2_trim', function(keys, argv)
  local trimmed = tonumber(redis.call('GET', keys[1]) or '0')
  local through = math.min(tonumber(argv[1]), math.max(trimmed, last_seq(keys[2])))
  if through > trimmed then
    redis.call('SET', keys[1], string.format('%d', through))
    redis.call('XTRIM', keys[2], 'MINID', string.format('0-%d', through + 1))
  end
  return 1
end)

-- ffv2_bounds returns the trim point and the last Seq of a log, read together.
-- KEYS: trim point, event stream.
redis.register_function{function_name = 'ffv2_bounds', flags = {'no-writes'}, callback = function(keys)
  local trimmed = tonumber(redis.call('GET', keys[1]) or '0')
  return {trimmed, math.max(trimmed, last_seq(keys[2]))}
end}
