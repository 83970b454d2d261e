#!lua name=flowfabric_v5

-- FlowFabric's Valkey/Redis store library, version 5. It holds storage, not business logic:
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
--
-- Constant arguments of the hot calls are written as strings ('0'): Redis formats every
-- Lua number passed to redis.call as a double.

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

-- ffv5_pop marks up to n due items of a queue as popped by one unit and returns them,
-- with the next `look` items after them that the unit can see. Nothing leaves the queue:
-- the unit's commit removes the items if their marks are still its own, and an
-- unfinished unit's marks lapse after `ttl` ms. Items other units are popping are
-- skipped.
-- KEYS: queue items, pop marks. ARGV: the largest due score (8 bytes; '' for any), n,
-- token, ttl, look.
-- Returns {popped, lookahead, complete}; complete is 1 if the lookahead reaches the end.
redis.register_function('ffv5_pop', function(keys, argv)
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

-- ffv5_release removes every pop mark of one unit from some queues: for a unit that
-- does not know what its last pop marked (the reply was lost). It only frees memory, so
-- it runs on a server at maxmemory too (allow-oom), as do ffv5_unhint and ffv5_trim.
-- KEYS: pop marks of each queue. ARGV: token.
redis.register_function{function_name = 'ffv5_release', flags = {'allow-oom'}, callback = function(keys, argv)
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
end}

-- ffv5_range returns up to n items of a queue after a start bound, with scores up to a
-- limit, that the unit with `token` can see (see hidden).
-- KEYS: queue items, pop marks. ARGV: start bound, the largest score (8 bytes; '' for
-- any), n, token.
redis.register_function{function_name = 'ffv5_range', flags = {'no-writes'}, callback = function(keys, argv)
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

-- CHUNK bounds the items one command takes, within what unpack can pass to a call.
local CHUNK = 500

-- batched runs redis.call(cmd, key, items…) over list in chunks of at most CHUNK items
-- of `width` arguments each, and returns the array replies concatenated.
local function batched(cmd, key, list, width)
  local out = {}
  local step = CHUNK * width
  for from = 1, #list, step do
    local r = redis.call(cmd, key, unpack(list, from, math.min(from + step - 1, #list)))
    if type(r) == 'table' then
      for _, v in ipairs(r) do
        out[#out + 1] = v
      end
    end
  end
  return out
end

-- grouped collects the counted list of `width`-argument entries starting at argv[i],
-- whose first argument is a queue index, by queue in order of first appearance: it
-- returns the queue indexes, per queue index the entries' other arguments (one list per
-- argument), and the index after the list.
local function grouped(argv, i, width)
  local n = tonumber(argv[i])
  i = i + 1
  local order, by = {}, {}
  for _ = 1, n do
    local q = tonumber(argv[i])
    local g = by[q]
    if not g then
      g = {}
      for w = 1, width - 1 do
        g[w] = {}
      end
      by[q] = g
      order[#order + 1] = q
    end
    for w = 1, width - 1 do
      g[w][#g[w] + 1] = argv[i + w]
    end
    i = i + width
  end
  return order, by, i
end

-- heads_are reports whether the encoded items `want` are, in order, the first items of a
-- queue that the unit with `token` can see (see hidden).
local function heads_are(z, m, want, token)
  local now = now_ms()
  local j, from = 1, '-'
  while true do
    local batch = #want - j + 17
    local items = redis.call('ZRANGE', z, from, '+', 'BYLEX', 'LIMIT', 0, batch)
    if #items == 0 then
      return false
    end
    local marks = marks_of(m, items)
    for k, enc in ipairs(items) do
      if not hidden(marks[k], token, now) then
        if enc ~= want[j] then
          return false
        end
        j = j + 1
        if j > #want then
          return true
        end
      end
    end
    if #items < batch then
      return false
    end
    from = '(' .. items[#items]
  end
end

-- members_of returns the members of encoded queue items.
local function members_of(encs)
  local out = {}
  for k, enc in ipairs(encs) do
    out[k] = string.sub(enc, 9)
  end
  return out
end

-- A unit. KEYS: 1 commit counter, 2 delete counter, 3 event stream, 4 queue directory,
-- 5 hinted queues, then the unit's nR record keys, then three keys per queue it touched
-- (items, scores, pop marks), and for a commit, last, a key that never exists: while the
-- shard's slot migrates, the server refuses such a call at once (TRYAGAIN), where it
-- would refuse, half-way through the writes, a key this function emptied and touches
-- again.
-- ARGV: mode ('c' commit, 'a' abort: check and release the unit's pops, 'v' check only),
-- channel to publish on ('' for none) and the message, the unit's token, nR, nQ, the nQ
-- queue names, then counted lists:
--   record checks   (key index, expected version; '' expects no record)
--   record digests  (key index, SHA-1 in hex of the whole string the record's key should
--                   hold, version included)
--   range checks    (queue index, encoded item expected in the queue)
--   pops            (queue index, encoded item the unit popped)
--   foreseen pops   (queue index, encoded item the unit took without popping it: the
--                   items of a queue foreseen must be its first items the unit can see,
--                   in order)
--   record puts     (key index, value)
--   record deletes  (key index)
--   queue writes    (queue index, member, encoded score; '' removes the member), each
--                   member at most once per queue
--   events          (encoded event)
-- Queue checks and writes take one command per queue and kind, not one per item.
-- Returns {0, reason} when a read no longer holds: then nothing was written except, for
-- 'c' and 'a', the release of the unit's pop marks. Otherwise {1, ''} for 'a' and 'v',
-- and for 'c' {1, '', commit number, the names of the queues to add to the store's hint
-- (see below), then for each queue written its name and new first item ('' when empty)}.
local function unit(keys, argv)
  local mode, channel, message, token = argv[1], argv[2], argv[3], argv[4]
  local nR, nQ = tonumber(argv[5]), tonumber(argv[6])
  local qbase = 5 + nR
  local i = 7 + nQ
  local reason = nil

  local n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    if not reason and redis.call('GETRANGE', keys[5 + tonumber(argv[i])], '0', '7') ~= argv[i + 1] then
      reason = 'a record changed'
    end
    i = i + 2
  end
  n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    if not reason then
      local v = redis.call('GET', keys[5 + tonumber(argv[i])])
      if not v or redis.sha1hex(v) ~= argv[i + 1] then
        reason = 'a record changed'
      end
    end
    i = i + 2
  end
  local rangeOrder, ranges
  rangeOrder, ranges, i = grouped(argv, i, 2)
  for _, q in ipairs(rangeOrder) do
    if reason then
      break
    end
    for _, score in ipairs(batched('ZMSCORE', keys[qbase + 3 * q - 2], ranges[q][1], 1)) do
      if not score then
        reason = 'a queue item it read is gone'
        break
      end
    end
  end
  local popOrder, pops
  popOrder, pops, i = grouped(argv, i, 2)
  for _, q in ipairs(popOrder) do
    pops[q].members = members_of(pops[q][1])
  end
  local foreOrder, fores
  foreOrder, fores, i = grouped(argv, i, 2)
  for _, q in ipairs(popOrder) do
    if reason then
      break
    end
    local b = qbase + 3 * q
    local marks = batched('HMGET', keys[b], pops[q].members, 1)
    local scores = batched('ZMSCORE', keys[b - 2], pops[q][1], 1)
    for k = 1, #pops[q].members do
      if not marks[k] or string.sub(marks[k], MARK_DIGITS + 1) ~= token or not scores[k] then
        reason = 'a popped item was taken by another unit'
        break
      end
    end
  end
  for _, q in ipairs(foreOrder) do
    if reason then
      break
    end
    local b = qbase + 3 * q
    if not heads_are(keys[b - 2], keys[b], fores[q][1], token) then
      reason = 'the items it foresaw are no longer the head of their queue'
    end
  end

  if reason or mode ~= 'c' then
    if mode ~= 'v' then
      for _, q in ipairs(popOrder) do
        local b = qbase + 3 * q
        local members = pops[q].members
        local mine = {}
        for k, mark in ipairs(batched('HMGET', keys[b], members, 1)) do
          if mark and string.sub(mark, MARK_DIGITS + 1) == token then
            mine[#mine + 1] = members[k]
          end
        end
        batched('HDEL', keys[b], mine, 1)
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
  local writeOrder, writes
  writeOrder, writes, i = grouped(argv, i, 3)
  local nE = tonumber(argv[i])
  for k = i + 1, i + nE do
    redis.call('XADD', keys[3], '0-*', 'e', argv[k])
  end

  -- Records go in batches of up to CHUNK, within what unpack can pass to one call.
  local ver = redis.call('INCR', keys[1])
  local stamp = struct.pack('>I8', ver)
  for from = 0, nP - 1, CHUNK do
    local kv = {}
    for k = iP + 2 * from, iP + 2 * math.min(from + CHUNK, nP) - 1, 2 do
      kv[#kv + 1] = keys[5 + tonumber(argv[k])]
      kv[#kv + 1] = stamp .. argv[k + 1]
    end
    redis.call('MSET', unpack(kv))
  end
  local deleted = 0
  for from = 0, nD - 1, CHUNK do
    local del = {}
    for k = iD + from, iD + math.min(from + CHUNK, nD) - 1 do
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
  for _, q in ipairs(popOrder) do
    local b = qbase + 3 * q
    batched('ZREM', keys[b - 2], pops[q][1], 1)
    batched('HDEL', keys[b - 1], pops[q].members, 1)
    batched('HDEL', keys[b], pops[q].members, 1)
    touch(q)
  end
  for _, q in ipairs(foreOrder) do
    local b = qbase + 3 * q
    local members = members_of(fores[q][1])
    batched('ZREM', keys[b - 2], fores[q][1], 1)
    batched('HDEL', keys[b - 1], members, 1)
    batched('HDEL', keys[b], members, 1)
    touch(q)
  end
  for _, q in ipairs(writeOrder) do
    local b = qbase + 3 * q
    local members, scores = writes[q][1], writes[q][2]
    local olds = batched('HMGET', keys[b - 1], members, 1)
    local zrem, hdel, zadd, hset = {}, {}, {}, {}
    for k, member in ipairs(members) do
      local old, score = olds[k], scores[k]
      if old and old ~= score then
        zrem[#zrem + 1] = old .. member
      end
      if score == '' then
        if old then
          hdel[#hdel + 1] = member
        end
      elseif old ~= score then
        local enc = score .. member
        zadd[#zadd + 1] = '0'
        zadd[#zadd + 1] = enc
        hset[#hset + 1] = member
        hset[#hset + 1] = score
        added[enc] = q
      end
    end
    if #zrem > 0 or #zadd > 0 then
      batched('ZREM', keys[b - 2], zrem, 1)
      batched('HDEL', keys[b - 1], hdel, 1)
      batched('ZADD', keys[b - 2], zadd, 2)
      batched('HSET', keys[b - 1], hset, 2)
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
    local name = argv[6 + q]
    local head = redis.call('ZRANGE', keys[b - 2], '0', '0')[1]
    out[#out + 1] = name
    if head then
      out[#out + 1] = head
      if added[head] then
        earlier = true
        if redis.call('ZADD', keys[4], 'NX', '0', name) == 1 and redis.call('SADD', keys[5], name) == 1 then
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

redis.register_function('ffv5_unit', unit)
redis.register_function{function_name = 'ffv5_check', flags = {'no-writes'}, callback = function(keys, argv)
  if argv[1] ~= 'v' then
    return redis.error_reply('ERR ffv5_check only checks')
  end
  return unit(keys, argv)
end}

-- ffv5_unhint is the shard's half of removing queues from the store's hint, run after
-- they were taken out of it: of the queues named, those that are empty (not in the
-- directory) leave the hinted set, so that the commit that next fills one reports it;
-- the names of the others, non-empty again meanwhile, are returned for the caller to put
-- back.
-- KEYS: queue directory, hinted queues. ARGV: queue names.
redis.register_function{function_name = 'ffv5_unhint', flags = {'allow-oom'}, callback = function(keys, argv)
  local back = {}
  for _, name in ipairs(argv) do
    if redis.call('ZSCORE', keys[1], name) then
      back[#back + 1] = name
    else
      redis.call('SREM', keys[2], name)
    end
  end
  return back
end}

-- ffv5_trim deletes the events with Seq at most `through` (at most the last one) and
-- raises the trim point; it never lowers it. On a server at maxmemory it is how the
-- store frees space (the engine's retention sweep), so it runs there too (allow-oom).
-- KEYS: trim point, event stream. ARGV: through.
redis.register_function{function_name = 'ffv5_trim', flags = {'allow-oom'}, callback = function(keys, argv)
  local trimmed = tonumber(redis.call('GET', keys[1]) or '0')
  local through = math.min(tonumber(argv[1]), math.max(trimmed, last_seq(keys[2])))
  if through > trimmed then
    redis.call('SET', keys[1], string.format('%d', through))
    redis.call('XTRIM', keys[2], 'MINID', string.format('0-%d', through + 1))
  end
  return 1
end}

-- ffv5_bounds returns the trim point and the last Seq of a log, read together.
-- KEYS: trim point, event stream.
redis.register_function{function_name = 'ffv5_bounds', flags = {'no-writes'}, callback = function(keys)
  local trimmed = tonumber(redis.call('GET', keys[1]) or '0')
  return {trimmed, math.max(trimmed, last_seq(keys[2]))}
end}
