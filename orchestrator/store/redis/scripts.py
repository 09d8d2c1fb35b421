"""The Lua scripts behind every state transition in Redis.

Each script is one atomic step. A script given an epoch first compares it with the
stored one and refuses an older epoch: that is the fencing that keeps a paused or
partitioned ex-leader from changing anything once a newer leader took over.
`EXPIRE_LEASE` and `FORGET_ENDED` are the leader's alone and always fenced. Every node
decides: the node that stored an event (a start, a result, a signal, an operation, a
child's end) runs `APPLY_DECISION` for that workflow at once, without an epoch (and
`DEFER`, when the workflow is gone or must be parked), and the leader's engine runs the
same scripts with its epoch, fenced, for what needs a clock (timers, and the sweep of
events whose node died before deciding them).
A worker's result usually comes with its decision: `STEP` stores the result and applies the
decision the node made from the workflow with that result in it, in one call (falling back to
storing the result alone when the workflow moved on meanwhile), and a start with its first decision:
`START_WORKFLOW` applies it when, and only when, it creates the workflow.
Every script that changes a workflow bumps its `rev` field; a decision's write is
conditional on the revision it was computed from, so no event is ever overwritten and,
of two nodes deciding the same workflow, only one wins (the other reloads and decides again).

Arguments are named: ARGV[1] is a JSON object of the small scalar arguments (`A.id`,
`A.now`, ...), always with `A.prefix`; large user data (inputs, outputs, snapshots) follows
as ARGV[2], ARGV[3], ... named by a local variable at the top of each script, so it is
stored as the text the caller sent and never decoded here. Only the small state objects
of scalars (`s:<task id>`) and the decision's own envelope go through cjson. Scripts
answer with a plain value or a JSON object (`{"outcome": ..., ...}`) that `adapter.py`
turns into a typed result; nothing else parses them.

A step costs as few Redis commands as it can (issue 21): the workflow hash a hot script works on
is read in one HMGET and written in one HSET at its end (`track`/`flush`), with the revision and
update time among the fields; a decision made in the same script as its event leaves no decide
reminder to remove; and a broadcast goes only where someone listens: `changed:<id>` while the
workflow is watched (its `watch` field, WATCH), `done:<listener>` to the nodes that wait for its
end (its `waiters`, EXPECT_END), `ready:<type>` to the nodes serving that type. Every key a
script touches for a workflow is a key of its partition.

Key names are built here and in `keys.py` alone, which says how the state is partitioned (issue 23).
KEYS[1] of every script is the prefix of the partition it works in (`wfo:{<cluster>:p<n>}`, its hash tag),
or the global one (`wfo:{<cluster>}`) for the event bus: every key a script touches carries that tag, so
that a Redis Cluster routes the call by it and the script touches one slot. A workflow's family
(its sub-workflows, its failure workflow, the workflows its decisions start) is in its partition.
What a step does beyond its partition is done after it, in the global slot: a limited task type's
counts (LIMIT_ACQUIRE, LIMIT_SETTLE, LIMIT_RELEASE below) and the events EVENT tasks publish (each
decision leaves them in its partition's `outbox`; RELAY_EVENTS publishes each once). Every source
starts with `#!lua`, which makes a Redis Cluster (a one-server one in the tests too) refuse a script
that touches a second slot. A script builds most of its keys from KEYS[1], so Redis cannot check them
before it runs; while a slot moves between masters its first command (COMMON's fence, sent by a store
on a Redis Cluster) stops it before any write, on either master (errors.py SLOT_MOVING), and the
caller tries again.
"""

COMMON = r"""#!lua
local A = cjson.decode(ARGV[1])
local P = KEYS[1]   -- the partition's prefix (its hash tag), or the global one
-- The fence of a moving slot, before any write: a Redis Cluster master refuses a command on two keys
-- it does not hold while the slot is moving away or in (and only then), which stops the script here,
-- on either master, instead of letting it work on half of the partition (errors.py SLOT_MOVING).
-- A store on a Redis Cluster asks for it (A.f); one Redis never moves a slot.
if A.f then redis.call('EXISTS', P .. ':fence:a', P .. ':fence:b') end
local G = A.g      -- the global slot's prefix: definitions, limits, the event bus; and the channels
local function result(t) return cjson.encode(t) end
local TERMINAL = {COMPLETED = true, FAILED = true, TIMED_OUT = true, TERMINATED = true,
                  COMPENSATED = true, COMPENSATION_FAILED = true}
local function wf_key(id) return P .. ':wf:' .. id end
-- Reads and writes of the workflow hash a script works on (`track`): the fields it needs are read
-- in one HMGET, its writes wait in `writes` and go in one HSET (`flush`), and what it wrote is read
-- back from `known`, so a step costs a couple of hash commands however many fields it touches. A
-- hash that is not tracked is read and written directly. Every write of a tracked hash goes through
-- hset/hdel, or `known` would lie.
local TRACKED = {}
local function track(key, ...)
  local c = TRACKED[key]
  if not c then
    c = {known = {}, writes = {}, bumped = nil, whole = false}
    TRACKED[key] = c
  end
  local wanted = {}
  for _, name in ipairs({...}) do if c.known[name] == nil then wanted[#wanted + 1] = name end end
  if c.whole then   -- every field is known: one not there is not in the hash
    for _, name in ipairs(wanted) do c.known[name] = false end
  elseif #wanted > 0 then
    local values = redis.call('HMGET', key, unpack(wanted))
    for i, name in ipairs(wanted) do c.known[name] = values[i] or false end
  end
  return c
end
local function hget(key, name)
  local c = TRACKED[key]
  if not c then return redis.call('HGET', key, name) end
  local value = c.known[name]
  if value == nil and c.whole then return nil end
  if value == nil then
    value = redis.call('HGET', key, name) or false
    c.known[name] = value
  end
  return value or nil
end
local function hset(key, ...)
  local c = TRACKED[key]
  if not c then return redis.call('HSET', key, ...) end
  local pairs_ = {...}
  for i = 1, #pairs_, 2 do
    c.writes[#c.writes + 1] = pairs_[i]
    c.writes[#c.writes + 1] = pairs_[i + 1]
    c.known[pairs_[i]] = pairs_[i + 1]
  end
end
-- Whether anyone watches the workflow now: a watcher keeps the `watch` field at a deadline a little
-- ahead (WATCH below); `changed` is published only then.
local function watched(key, now)
  local until_ = hget(key, 'watch')
  return until_ and tonumber(until_) >= tonumber(now)
end
local function notify_change(id, key, now)
  if watched(key, now) then redis.call('PUBLISH', G .. ':changed:' .. id, now) end
end
local HSET_CHUNK = 512   -- field-value (score-member) pairs per HSET (ZADD): Lua's unpack has a limit
-- Write what a tracked hash holds back: one HSET (per HSET_CHUNK pairs), then its `changed`.
local function flush(key)
  local c = TRACKED[key]
  if not c then return end
  local w = c.writes
  for first = 1, #w, 2 * HSET_CHUNK do
    redis.call('HSET', key, unpack(w, first, math.min(#w, first + 2 * HSET_CHUNK - 1)))
  end
  c.writes = {}
  if c.bumped then
    notify_change(c.bumped, key, c.bumped_at)
    c.bumped = nil
  end
end
local function hdel(key, ...)
  local c = TRACKED[key]
  if c then
    flush(key)   -- a write waiting for the same field must not come back after the delete
    for _, name in ipairs({...}) do c.known[name] = false end
  end
  redis.call('HDEL', key, ...)
end
local function flush_all() for key in pairs(TRACKED) do flush(key) end end
-- A hash tracked whole: one HGETALL in place of the HMGET of a few fields (the same one command),
-- for a script that answers with the record as it leaves it (`as_written`).
local function track_whole(key)
  local c = TRACKED[key]
  if c and c.whole then return c end
  c = track(key)
  local row = redis.call('HGETALL', key)
  for i = 1, #row, 2 do
    if c.known[row[i]] == nil then c.known[row[i]] = row[i + 1] end   -- a write waiting wins
  end
  c.whole = true
  return c
end
-- The record of a hash tracked whole, with this script's writes: {field, value, ...} (after flush_all).
local function as_written(key)
  local row = {}
  for name, value in pairs(TRACKED[key].known) do
    if value then
      row[#row + 1] = name
      row[#row + 1] = tostring(value)
    end
  end
  return row
end
-- The namespace of a stored name ('' = the default one; core/namespaces.py writes 'team-a:name').
local function ns_of_name(name) return string.match(name, '^([^:]+):') or '' end
-- A workflow's namespace: stored with it (`ns`) since the quotas; an older record says it in its name.
local function ns_of(key)
  local ns = hget(key, 'ns')
  if ns then return ns end
  local meta = hget(key, 'm')
  if not meta then return '' end
  return ns_of_name(cjson.decode(meta).name)
end
-- The fields a script reads of the workflow it decides (one HMGET).
local DECIDE_FIELDS = {'rev', 'watch', 'due', 'st', 'created', 'ns', 'parent', 'waiters'}
-- Every status change goes through here: the status index, and the set of the namespace's
-- workflows in flight (every status but a terminal one), which its quota counts (a set, not a
-- counter: a transition seen twice cannot make it drift).
local function set_status(id, key, new_status)
  local old = hget(key, 'st')
  local created = hget(key, 'created') or '0'
  if old then redis.call('ZREM', P .. ':idx:st:' .. old, id) end
  redis.call('ZADD', P .. ':idx:st:' .. new_status, created, id)
  hset(key, 'st', new_status)
  local flight = P .. ':inflight:' .. ns_of(key)
  if TERMINAL[new_status] then redis.call('SREM', flight, id) else redis.call('SADD', flight, id) end
end
-- A namespace's topics, which its quota counts: a topic is counted from its first use (one made
-- before the quotas, once it is used again). With `quota` > 0 a new one past it is refused:
-- false and how many the namespace has. Dead-letter topics, EVENT tasks and handlers' publish
-- actions are counted (quota 0) but never refused: a running workflow or a handler cannot be.
local function topic_room(topic, quota)
  local tkey = G .. ':topics:' .. ns_of_name(topic)
  if redis.call('SISMEMBER', tkey, topic) == 1 then return true, 0 end
  if quota and quota > 0 then
    local n = redis.call('SCARD', tkey)
    if n >= quota and redis.call('EXISTS', G .. ':ev:' .. topic) == 0 then return false, n end
  end
  redis.call('SADD', tkey, topic)
  return true, 0
end
-- The decide set holds, per workflow, when it must be decided next without an event of its
-- own: its earliest timer, or a safety net for an event. LT: an earlier time wins. The workflow's
-- `due` field says whether it may be in the set ('0': it is not), so a decision that finds none
-- does not remove one (apply_decision). Every ZADD to the set goes with `due` 1.
local function remind(id, at)
  redis.call('ZADD', P .. ':decide', 'LT', at, id)
  hset(wf_key(id), 'due', 1)
end
-- A timer: the leader sleeps until the earliest one it knows of, so it is told of this one.
local function timer(id, at)
  remind(id, at)
  redis.call('PUBLISH', G .. ':timer', at)
end
-- A task type has queued work: only the nodes with a worker (or a poller) for it listen. The
-- message names one task this script queued (`member`, id|task), or the type when there is no
-- such task (a slot of a concurrency limit freed, a workflow resumed): a node whose claim took
-- that very task knows that claim found everything the script queued, and claims no more for it.
local function ready(ttype, member)
  redis.call('PUBLISH', G .. ':ready:' .. ttype, member or ttype)
end
-- An event (a start, a result, a signal, an operation, a child's end) is decided at once by
-- the node that stored it. In case that node dies first, the event also leaves a reminder
-- that the leader's sweep picks up once SWEEP_GRACE_MS have passed.
local SWEEP_GRACE_MS = 500
local function event(id, now)
  remind(id, now + SWEEP_GRACE_MS)
end
-- A change: the revision moves on by one. A tracked hash is written (and its watchers told) at
-- its flush; another is written here, in one HSET with the revision read just before.
local function bump(id, key, now)
  local c = TRACKED[key]
  if c then
    hset(key, 'rev', tonumber(hget(key, 'rev')) + 1, 'upd', now)
    c.bumped, c.bumped_at = id, now
    return
  end
  local seen = redis.call('HMGET', key, 'rev', 'watch')
  redis.call('HSET', key, 'rev', tonumber(seen[1]) + 1, 'upd', now)
  if seen[2] and tonumber(seen[2]) >= tonumber(now) then redis.call('PUBLISH', G .. ':changed:' .. id, now) end
end
local function fenced(epoch)
  local stored = tonumber(redis.call('GET', P .. ':epoch') or '0')
  return epoch >= stored
end
-- Whether `worker` holds the attempt `s`; '*' (a Conductor REST update naming no worker) holds any.
local function holds(s, worker) return worker == '*' or s.worker == worker end
local function task_state(key, tid)
  local raw = hget(key, 's:' .. tid)
  return raw and cjson.decode(raw)
end
local function split(member)
  local sep = string.find(member, '|', 1, true)
  return string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
end
-- A type's concurrency and rate limits (0 = none) and the rate's period, read once per script from
-- the partition's copy of them (RedisStore.put_task_def writes every partition's).
local LIMITS = {}
local function limits_of(ttype)
  local known = LIMITS[ttype]
  if known == nil then
    local stored = redis.call('HGET', P .. ':limits', ttype)
    known = {0, 0, 0}
    if stored then
      local a, b, c = string.match(stored, '^(%d+)|(%d+)|(%d+)$')
      known = {tonumber(a), tonumber(b), tonumber(c)}
    end
    LIMITS[ttype] = known
  end
  return known[1], known[2], known[3]
end
-- Whether a type has a concurrency or a rate limit (claimed through its limiter then: LIMIT_ACQUIRE).
local function limited(ttype)
  local conc, rate = limits_of(ttype)
  return conc > 0 or rate > 0
end
-- A lease ends (result, expiry, release, cancel): a concurrency-limited type may take another task.
-- Its tasks in progress are counted in the global slot (LIMIT_SETTLE), which a partition's script may
-- not touch: the attempt goes to the partition's `freed` set and the leader's clocks, told at once
-- (`freed`), take it out of the count there (LIMIT_RELEASE), which then wakes the type's claimers.
local function drop_lease(id, tid, ttype)
  local member = id .. '|' .. tid
  redis.call('ZREM', P .. ':leases', member)
  if limits_of(ttype) > 0 and redis.call('SADD', P .. ':freed', ttype .. '|' .. member) == 1 then
    redis.call('PUBLISH', G .. ':freed', P)
  end
end
-- A child's end completes or fails its parent's SUB_WORKFLOW task, in the same step.
local function finish_parent(id, key, status, now)
  local parent = hget(key, 'parent')
  if not parent then return end
  local pid, ptid = split(parent)
  local pkey = wf_key(pid)
  local s = task_state(pkey, ptid)
  if not s or s.status ~= 'IN_PROGRESS' then return end
  if status == 'COMPLETED' then
    s.status = 'COMPLETED'
    hset(pkey, 'o:' .. ptid, hget(key, 'out') or '{}')
  else
    s.status = 'FAILED'
    s.reason = 'sub-workflow ' .. id .. ' ended ' .. status .. ': ' .. (hget(key, 'reason') or '')
  end
  s.ended = tonumber(now)
  hset(pkey, 's:' .. ptid, cjson.encode(s))
  bump(pid, pkey, now)
  event(pid, now)
end
-- Every terminal transition goes through here: the audit stream that drills read to
-- prove nothing ended twice, the parent, and the nodes that wait for this end (EXPECT_END):
-- each hears it on its own channel, the others not at all.
local function end_workflow(id, key, status, now)
  hset(key, 'end', now)
  redis.call('XADD', P .. ':ended', 'MAXLEN', '~', 1000000, '*', 'wf', id, 'st', status, 'at', now)
  finish_parent(id, key, status, now)
  local waiters = hget(key, 'waiters')
  if waiters then
    for listener in string.gmatch(waiters, '%S+') do redis.call('PUBLISH', G .. ':done:' .. listener, id) end
  end
end
-- The attempt's new state and output, and the revision (no reminder: see finish_task).
local function store_result(id, key, tid, s, status, output, reason, now)
  s.status = status
  s.ended = tonumber(now)
  s.reason = reason
  hset(key, 's:' .. tid, cjson.encode(s), 'o:' .. tid, output)
  bump(id, key, now)
end
-- A task attempt ends with a result (a worker's, or a signal's): record it and wake the decider.
local function finish_task(id, key, tid, s, status, output, reason, now)
  store_result(id, key, tid, s, status, output, reason, now)
  event(id, now)
end
-- Hand a SCHEDULED attempt to a worker with a lease; returns its spec json and lease for the push.
-- (A limited type's room was granted before, in the global slot: LIMIT_ACQUIRE.)
local function take(id, key, tid, s, worker, now)
  local member = id .. '|' .. tid
  s.status = 'IN_PROGRESS'
  s.worker = worker
  s.started = now
  s.queued = false
  hset(key, 's:' .. tid, cjson.encode(s))
  redis.call('ZADD', P .. ':leases', now + s.lease_ms, member)
  if s.timeout_ms and s.timeout_ms > 0 then timer(id, now + s.timeout_ms) end
  return hget(key, 't:' .. tid), s.lease_ms
end
-- A definition snapshot is stored once, under its digest, however many workflows run it; a
-- workflow holds the digest. `text` may be '' when the caller believes it is stored already.
local function keep_snapshot(digest, text)
  local skey = P .. ':snap:' .. digest
  if text ~= '' then
    redis.call('SET', skey, text, 'NX')
    return true
  end
  return redis.call('EXISTS', skey) == 1
end
-- A new workflow's record, indexes and reminder. `fresh`: the caller knows the id is not taken;
-- `waiter`: a node that waits for its end (see end_workflow); `decided`: its first decision is
-- applied in this script (START_WORKFLOW): no reminder, and the record is tracked, known field by
-- field, so that it goes out with the decision's writes in one HSET at the flush.
local function create_workflow(id, meta, digest, name, corr, parent, vars, now, depth, fresh, waiter, decided)
  local key = wf_key(id)
  if not fresh and redis.call('EXISTS', key) == 1 then return false end
  local ns = ns_of_name(name)
  local fields = {'m', meta, 'snap', digest, 'created', now, 'upd', now, 'rev', 1, 'vars', vars, 'ns', ns,
                  'st', 'RUNNING', 'due', decided and 0 or 1}
  if parent ~= '' then fields[#fields + 1] = 'parent'; fields[#fields + 1] = parent end
  if depth and depth > 0 then fields[#fields + 1] = 'depth'; fields[#fields + 1] = depth end   -- workflows above it
  if waiter and waiter ~= '' then fields[#fields + 1] = 'waiters'; fields[#fields + 1] = waiter end
  if decided then
    local c = track(key)   -- nothing to read: the record is new
    for _, field in ipairs(DECIDE_FIELDS) do c.known[field] = false end
    hset(key, unpack(fields))
  else
    redis.call('HSET', key, unpack(fields))
  end
  redis.call('ZADD', P .. ':idx:st:RUNNING', now, id)   -- what set_status does for a new record
  redis.call('SADD', P .. ':inflight:' .. ns, id)
  redis.call('ZADD', P .. ':idx:all', now, id)
  redis.call('ZADD', P .. ':idx:name:' .. name, now, id)
  if ns ~= '' then redis.call('ZADD', P .. ':idx:ns:' .. ns, now, id) end   -- a namespace's workflow
  if corr ~= '' then redis.call('ZADD', P .. ':idx:corr:' .. corr, now, id) end
  if not decided then   -- event(): `due` is in the record
    redis.call('ZADD', P .. ':decide', 'LT', now + SWEEP_GRACE_MS, id)
  end
  return true
end
-- The event bus: a stream per topic, trimmed (MAXLEN ~) to the topic's retention or the default.
local DEFAULT_TOPIC_MAXLEN = 100000
-- Readers waiting without a blocking read (adapter.py: past the pool of blocking connections)
-- are woken by the broadcast `published` (the topic).
local function publish_event(topic, payload, ekey, now)
  topic_room(topic, 0)
  local maxlen = tonumber(redis.call('HGET', G .. ':evcfg', topic) or DEFAULT_TOPIC_MAXLEN)
  local stream = G .. ':ev:' .. topic
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'p', payload, 'k', ekey, 'at', now)
  local age = tonumber(redis.call('HGET', G .. ':evage', topic) or 0)
  if age > 0 then redis.call('XTRIM', stream, 'MINID', math.max(0, tonumber(now) - age * 1000)) end
  redis.call('PUBLISH', G .. ':published', topic)
  return id
end
local function terminate_workflow(id, reason, now)
  local key = wf_key(id)
  local st = hget(key, 'st')
  if not st or TERMINAL[st] then return st end
  set_status(id, key, 'TERMINATED')
  hset(key, 'reason', reason)
  bump(id, key, now)
  end_workflow(id, key, 'TERMINATED', now)
  event(id, now)
  return 'OK'
end
-- Apply a decision computed from revision `expected` of workflow `id` (`decision()` gives its
-- envelope, decoded): 'STALE_EPOCH', 'GONE', 'CONFLICT', 'OK', or the tasks handed over
-- ({'OK', task id, spec, lease, ...}). The checks come before the first write. The workflow's
-- hash is tracked: its writes go out in one HSET at the end (the caller flushes).
local function apply_decision(epoch, id, expected, now, decision)
  if epoch and not fenced(epoch) then return 'STALE_EPOCH' end
  local key = wf_key(id)
  track(key, unpack(DECIDE_FIELDS))
  local rev = hget(key, 'rev')
  if not rev then
    redis.call('ZREM', P .. ':decide', id)
    return 'GONE'
  end
  if tonumber(rev) ~= expected then return 'CONFLICT' end
  local d = decision()
  for _, pair in ipairs(d.keep or {}) do keep_snapshot(pair[1], pair[2]) end
  -- the reminder that brought us here (or an older timer) goes; the decision's next timer replaces it.
  -- The leader's pass always removes it: a reminder left while `due` said none is gone then.
  if d.wake then
    redis.call('ZADD', P .. ':decide', d.wake, id)
    redis.call('PUBLISH', G .. ':timer', d.wake)
    hset(key, 'due', 1)
  elseif epoch or tostring(hget(key, 'due')) ~= '0' then
    redis.call('ZREM', P .. ':decide', id)
    hset(key, 'due', 0)
  end
  if d.noop then return 'OK' end   -- nothing changed: no new revision, no notification
  for _, w in ipairs(d.start or {}) do
    create_workflow(w.id, w.m, w.snap, w.name, w.corr, w.parent, w.vars, now, w.depth)
  end
  for _, tid in ipairs(d.delete or {}) do hdel(key, 't:' .. tid, 's:' .. tid, 'o:' .. tid) end
  if d.consumed and #d.consumed > 0 then hdel(key, unpack(d.consumed)) end
  if d.reset then hdel(key, 'out', 'reason', 'end') end
  local fields = d.fields or {}
  for i = 1, #fields, 2 do hset(key, fields[i], fields[i + 1]) end
  -- after the fields: the parent's task is already CANCELED, so a child ended here does not
  -- complete it again (finish_parent only touches a task still IN_PROGRESS)
  for _, t in ipairs(d.terminate or {}) do terminate_workflow(t[1], t[2], now) end
  -- A task queued for a worker of the deciding node is handed to it here (the same round trip),
  -- unless its type has limits (they are kept in the global slot: such a task is claimed);
  -- any other is queued and its type broadcast to the nodes serving it.
  local handed = {'OK'}
  local published = {}
  local serve = d.serve or {}
  for _, pair in ipairs(d.enqueue or {}) do
    local ttype, tid = pair[1], pair[2]
    local worker = serve[tid]
    local taken = false
    if worker and (d.status == nil or not TERMINAL[d.status]) then
      local s = task_state(key, tid)
      if not limited(ttype) and s and s.status == 'SCHEDULED' then
        local spec, lease = take(id, key, tid, s, worker, now)
        handed[#handed + 1] = tid
        handed[#handed + 1] = spec
        handed[#handed + 1] = lease
        taken = true
      end
    end
    if not taken then
      redis.call('ZADD', P .. ':q:' .. ttype, now, id .. '|' .. tid)
      if not published[ttype] then
        ready(ttype, id .. '|' .. tid)
        published[ttype] = true
      end
    end
  end
  for _, pair in ipairs(d.dequeue or {}) do redis.call('ZREM', P .. ':q:' .. pair[1], id .. '|' .. pair[2]) end
  for _, pair in ipairs(d.drop or {}) do drop_lease(id, pair[2], pair[1]) end
  if d.status then
    set_status(id, key, d.status)
    if d.out then hset(key, 'out', d.out) end
    if d.reason then hset(key, 'reason', d.reason) end
    if TERMINAL[d.status] then end_workflow(id, key, d.status, now) end
  end
  -- EVENT tasks' events: a topic is in the global slot, so they wait in the partition's outbox for the
  -- relay (RELAY_EVENTS, by the deciding node at once, by the leader's clocks for what it left)
  for _, e in ipairs(d.publish or {}) do redis.call('XADD', P .. ':outbox', '*', 't', e[1], 'p', e[2], 'at', now) end
  bump(id, key, now)
  if #handed > 1 then return handed end
  return 'OK'
end
"""

# A start, and the workflow's first decision in the same step when the node made one: the node
# builds the state this script creates (adapter.py) and decides it beforehand; only when this call
# creates the workflow (not on a repeated key or id, a quota refusal, a stale snapshot) is the
# decision applied, at revision 1, with no decide reminder left (nothing is left to decide).
# A: id, idem ('' = none), now, name, corr, idem_ttl, defs_rev (-1 = do not check the snapshot's age),
#    snap (the snapshot's digest), quota (workflows in flight its namespace may have; 0 = no limit),
#    waiter (a listener that waits for its end, as EXPECT_END registers; '' = none)
# ARGV[2] meta json, ARGV[3] snapshot json ('' = stored already under its digest), ARGV[4] variables json,
# ARGV[5] the first decision's envelope, as for APPLY_DECISION ('' = none: the workflow is left to be
# decided as after any event, its reminder set)
# -> {outcome, id}: outcome CREATED | EXISTS (idempotency key or id seen before) | STALE_SNAPSHOT |
#    NO_SNAPSHOT | QUOTA ({'QUOTA', '', count}: the namespace's workflows in flight); a decided start
#    answers {'CREATED', id, 'OK', task id, spec json, lease ms, ...} (the tasks handed to the node's workers)
START_WORKFLOW = COMMON + r"""
local meta, snapshot, vars = ARGV[2], ARGV[3], ARGV[4]
local d = ARGV[5] and ARGV[5] ~= '' and cjson.decode(ARGV[5])   -- decoded before the first write
-- The definitions revision: registrations raise each partition's copy right after the global one
-- (`raise_copies`). A copy behind the snapshot's revision (read from the global one, hence no newer)
-- is raised here; one ahead of it means the snapshot is older than a registration.
if A.defs_rev ~= -1 then
  local known = tonumber(redis.call('GET', P .. ':defsrev') or '0')
  if known > A.defs_rev then return {'STALE_SNAPSHOT', ''} end
  if known < A.defs_rev then redis.call('SET', P .. ':defsrev', A.defs_rev) end
end
if not keep_snapshot(A.snap, snapshot) then return {'NO_SNAPSHOT', ''} end
local idem = P .. ':idem:' .. A.idem
if A.idem ~= '' then   -- the key is claimed for this id here, and given back below if the start is refused
  local seen = redis.call('SET', idem, A.id, 'NX', 'GET', 'EX', A.idem_ttl)
  if seen then return {'EXISTS', seen} end
end
local taken = redis.call('EXISTS', wf_key(A.id)) == 1
if A.quota and A.quota > 0 and not taken then   -- A.elsewhere: its workflows in the other partitions
  local n = redis.call('SCARD', P .. ':inflight:' .. ns_of_name(A.name)) + (A.elsewhere or 0)
  if n >= A.quota then
    if A.idem ~= '' then redis.call('DEL', idem) end
    return {'QUOTA', '', n}
  end
end
if taken then return {'EXISTS', A.id} end
create_workflow(A.id, meta, A.snap, A.name, A.corr, '', vars, A.now, 0, true, A.waiter, d)
if not d then return {'CREATED', A.id} end
local applied = apply_decision(nil, A.id, 1, A.now, function() return d end)
flush_all()
local answer = {'CREATED', A.id}
if type(applied) == 'table' then
  for i = 1, #applied do answer[#answer + 1] = applied[i] end
else
  answer[3] = applied
end
return answer
"""

# A decision, all in one step: by the node that stored an event (A.epoch absent: any node may,
# the revision check alone keeps it safe), or by the leader's engine (A.epoch: fenced).
# A: [epoch], id, rev (the revision the decider read), now.
# ARGV[2]: the decision envelope json: {noop, status, out (json text), reason, reset, fields [f, v, ...],
# delete [task id], consumed [field], enqueue [[type, task id]], dequeue [[type, task id]],
# drop [[type, task id]], start [{id, m, snap (digest), name, corr, parent, vars, depth}],
# keep [[digest, snapshot json]] (snapshots the decision refers to), terminate [[workflow id, reason]],
# wake, serve {task id: worker id: hand it to this worker of the caller's now, if its limits allow},
# publish [[topic, payload json]] (events of EVENT tasks, appended to their topics' streams)}
# Returns 'OK', or {'OK', task id, spec json, lease ms, ...} for the tasks handed over.
APPLY_DECISION = COMMON + r"""
local applied = apply_decision(A.epoch, A.id, A.rev, A.now, function() return cjson.decode(ARGV[2]) end)
flush_all()
return applied
"""

# Hands up to n queued tasks of one type to a worker, atomically with their lease. A type with
# limits is claimed only with A.granted (its room, granted by LIMIT_ACQUIRE in the global slot, is
# A.count); without it, a claim that finds such a type's tasks puts them back and answers 'LIMITED'.
# A: type, count, now, worker, records (true: answer with each claiming workflow's record too), granted.
# Returns a flat list (the hot path: no JSON envelope): workflow id, task id, spec json, lease ms, ...
# With A.records: {that list, {workflow id, {field, value, ...}, ...}}: the record of each workflow
# a task was claimed from, as this claim left it (read by one HGETALL in place of the HMGET of a few
# fields), so that the claiming node decides the task's result without reading the workflow again.
CLAIM = COMMON + r"""
-- A larger workflow's record is not sent back: copying and parsing it on every claim of its
-- branches cost more than the reload its next result makes (a 1,000-branch fork, issue 21).
local RECORD_MAX_FIELDS = 512
local ttype = A.type
local qkey = P .. ':q:' .. ttype
local now = A.now
local looked = false   -- at the type's limits: once there is something to claim
local wanted = A.count
local out = {}
local claimed = 0
local kept = {}   -- popped members that keep their places (paused workflows, no room): put back at the end
local from = {}   -- the workflows tasks were claimed from, in order (and as a set)
-- attempts a worker asked to be called back for, whose time has come, join the queue first
local dkey = P .. ':qd:' .. ttype
for _, member in ipairs(redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', dkey, member)
  redis.call('ZADD', qkey, now, member)
end
while claimed < wanted do
  local asked = wanted - claimed
  local popped = redis.call('ZPOPMIN', qkey, asked)   -- {member, score, member, score, ...}
  if #popped > 0 and not looked then   -- an empty queue needs no look at the limits
    looked = true
    if limited(ttype) and not A.granted then
      -- a limited type is claimed only for the room its limiter granted (LIMIT_ACQUIRE, by the
      -- caller): what was popped goes back as it was
      for i = 1, #popped, 2 do redis.call('ZADD', qkey, popped[i + 1], popped[i]) end
      return 'LIMITED'
    end
  end
  for i = 1, #popped, 2 do
    local member, score = popped[i], popped[i + 1]
    if claimed >= wanted then
      kept[#kept + 1] = score
      kept[#kept + 1] = member
    else
      local id, tid = split(member)
      local key = wf_key(id)
      local c = TRACKED[key]
      if A.records and ((c and c.whole) or (not c and redis.call('HLEN', key) <= RECORD_MAX_FIELDS)) then
        track_whole(key)
      else
        track(key, 'st', 's:' .. tid, 't:' .. tid, 'rev', 'watch')
      end
      local st = hget(key, 'st')
      local s = task_state(key, tid)
      if st == 'PAUSED' and s and s.status == 'SCHEDULED' then
        kept[#kept + 1] = score   -- it keeps its place until the workflow resumes
        kept[#kept + 1] = member
      elseif s and s.status == 'SCHEDULED' and (st == 'RUNNING' or st == 'COMPENSATING') then
        local spec, lease = take(id, key, tid, s, A.worker, now)
        bump(id, key, now)
        claimed = claimed + 1
        if not from[id] then
          from[id] = true
          from[#from + 1] = id
        end
        out[#out + 1] = id
        out[#out + 1] = tid
        out[#out + 1] = spec
        out[#out + 1] = lease
      end   -- anything else is stale: it leaves the queue
    end
  end
  if #popped < 2 * asked then break end   -- the queue has no more
end
for first = 1, #kept, 2 * HSET_CHUNK do   -- in chunks: Lua's unpack has a limit
  redis.call('ZADD', qkey, unpack(kept, first, math.min(#kept, first + 2 * HSET_CHUNK - 1)))
end
flush_all()
if not A.records then return out end
local records = {}
for _, id in ipairs(from) do
  if TRACKED[wf_key(id)].whole then
    records[#records + 1] = id
    records[#records + 1] = as_written(wf_key(id))
  end
end
return {out, records}
"""

# A: id, task, now, worker.  Returns the new lease in ms, or 0 when it is gone.
HEARTBEAT = COMMON + r"""
local key = wf_key(A.id)
local s = task_state(key, A.task)
if not s then return 0 end
if s.status ~= 'IN_PROGRESS' or not holds(s, A.worker) then return 0 end
redis.call('ZADD', P .. ':leases', 'XX', A.now + s.lease_ms, A.id .. '|' .. A.task)
return s.lease_ms
"""

# A worker's result for one attempt. Idempotent: the same result twice is DUPLICATE; a result
# for an attempt that is no longer in progress, or held by another worker (after a release or
# a lease expiry), is STALE and changes nothing.
# A: id, task, status, reason, now, worker.  ARGV[2]: output json.
# -> {outcome: OK | DUPLICATE | STALE | UNKNOWN, detail}
COMPLETE_TASK = COMMON + r"""
local output = ARGV[2]
local id, tid = A.id, A.task
local key = wf_key(id)
track(key, 's:' .. tid, 'rev', 'watch')
local s = task_state(key, tid)
if not s then return result({outcome = 'UNKNOWN', detail = ''}) end
if s.status ~= 'IN_PROGRESS' then
  if s.status == A.status and holds(s, A.worker) then
    return result({outcome = 'DUPLICATE', detail = '', type = s.type})
  end
  return result({outcome = 'STALE', detail = s.status, type = s.type})
end
if not holds(s, A.worker) then return result({outcome = 'STALE', detail = 'held by another worker', type = s.type}) end
drop_lease(id, tid, s.type)
finish_task(id, key, tid, s, A.status, output, A.reason, A.now)
flush_all()
return result({outcome = 'OK', detail = '', type = s.type})
"""

# A worker's result and the decision it leads to, in one step: COMPLETE_TASK, then, if the workflow
# was still at revision A.rev when the result came, APPLY_DECISION of the decision the node computed
# from that revision with the result in it (so at A.rev + 1). If it was not (another event came
# first), the result is stored as COMPLETE_TASK stores it, its decide reminder included, and the
# node decides again from what is stored. Everything is checked before the first write. When the
# decision applies, the result leaves no reminder (it is decided here) and the hash is written once.
# A: id, task, status, reason, now, worker, rev.  ARGV[2]: output json.  ARGV[3]: the decision's
# envelope, as for APPLY_DECISION.
# -> {outcome, detail, type} when the result is not stored (DUPLICATE | STALE | UNKNOWN), else
#    {'OK', '', type, applied ('OK' | 'CONFLICT' | 'GONE'), task id, spec json, lease ms, ...}
#    (the tasks the decision handed to the node's workers).
STEP = COMMON + r"""
local output = ARGV[2]
local id, tid = A.id, A.task
local key = wf_key(id)
track(key, 's:' .. tid, unpack(DECIDE_FIELDS))
local s = task_state(key, tid)
if not s then return {'UNKNOWN', ''} end
if s.status ~= 'IN_PROGRESS' then
  if s.status == A.status and holds(s, A.worker) then return {'DUPLICATE', '', s.type} end
  return {'STALE', s.status, s.type}
end
if not holds(s, A.worker) then return {'STALE', 'held by another worker', s.type} end
local d = cjson.decode(ARGV[3])
local ttype = s.type
drop_lease(id, tid, ttype)
local applied = 'CONFLICT'
if tonumber(hget(key, 'rev')) == A.rev then
  store_result(id, key, tid, s, A.status, output, A.reason, A.now)
  applied = apply_decision(nil, id, A.rev + 1, A.now, function() return d end)
else
  finish_task(id, key, tid, s, A.status, output, A.reason, A.now)
end
flush_all()
local answer = {'OK', '', ttype}
if type(applied) == 'table' then
  answer[4] = 'OK'
  for i = 2, #applied do answer[#answer + 1] = applied[i] end
else
  answer[4] = applied
end
return answer
"""

# Completes a WAIT or HUMAN task from outside (an operator, a person, another system).
# A: id, task, status, reason, now.  ARGV[2]: output json.
# -> {outcome: OK | UNKNOWN | KIND (not a WAIT/HUMAN task) | STALE (task ended) | ENDED (workflow ended), detail}
SIGNAL_TASK = COMMON + r"""
local output = ARGV[2]
local id, tid = A.id, A.task
local key = wf_key(id)
local s = task_state(key, tid)
if not s then return result({outcome = 'UNKNOWN', detail = ''}) end
if s.type ~= 'WAIT' and s.type ~= 'HUMAN' then return result({outcome = 'KIND', detail = s.type}) end
local st = redis.call('HGET', key, 'st')
if TERMINAL[st] then return result({outcome = 'ENDED', detail = st}) end
if s.status ~= 'IN_PROGRESS' then return result({outcome = 'STALE', detail = s.status}) end
finish_task(id, key, tid, s, A.status, output, A.reason, A.now)
return result({outcome = 'OK', detail = ''})
"""

# Puts an unfinished attempt back in its queue without counting a failure, to be claimed again
# from A.at on (a worker's "call me back later": held in `qd:<type>` until a claim at or after
# that time moves it to the queue; the queue itself is claimed in order, whatever the clocks).
# A: id, task, now, worker, at.  ARGV[2]: the output so far ('' = keep what is stored).
# Returns 1 when released, 0 when the attempt is not this worker's.
RELEASE_TASK = COMMON + r"""
local id, tid = A.id, A.task
local key = wf_key(id)
local s = task_state(key, tid)
if not s then return 0 end
if s.status ~= 'IN_PROGRESS' or not holds(s, A.worker) then return 0 end
s.status = 'SCHEDULED'
s.queued = true
s.worker = ''
s.started = 0
redis.call('HSET', key, 's:' .. tid, cjson.encode(s))
if ARGV[2] and ARGV[2] ~= '' then redis.call('HSET', key, 'o:' .. tid, ARGV[2]) end
drop_lease(id, tid, s.type)
bump(id, key, A.now)
local at = tonumber(A.at) or 0
if at > tonumber(A.now) then   -- called back later: held apart, so the queue itself needs no clock
  redis.call('ZADD', P .. ':qd:' .. s.type, at, id .. '|' .. tid)
  return 1
end
redis.call('ZADD', P .. ':q:' .. s.type, A.now, id .. '|' .. tid)
ready(s.type, id .. '|' .. tid)
return 1
"""

# The reaper: an attempt whose lease passed without heartbeat or result times out.
# A: epoch, id, task, now.  -> STALE_EPOCH | RENEWED | GONE | EXPIRED
EXPIRE_LEASE = COMMON + r"""
if not fenced(A.epoch) then return 'STALE_EPOCH' end
local id, tid, now = A.id, A.task, A.now
local member = id .. '|' .. tid
local deadline = tonumber(redis.call('ZSCORE', P .. ':leases', member) or '0')
if deadline > now then return 'RENEWED' end
redis.call('ZREM', P .. ':leases', member)
local key = wf_key(id)
local s = task_state(key, tid)
if not s then return 'GONE' end
if s.status ~= 'IN_PROGRESS' then return 'GONE' end
s.status = 'TIMED_OUT'
s.ended = now
s.reason = 'lease expired: no heartbeat or result within ' .. s.lease_ms .. ' ms (worker ' .. s.worker .. ')'
redis.call('HSET', key, 's:' .. tid, cjson.encode(s))
drop_lease(id, tid, s.type)
bump(id, key, now)
remind(id, now)   -- the leader decides it in its next pass
return 'EXPIRED'
"""

# Raise a partition's copy of a global counter (the definitions revision) to at least ARGV[1];
# KEYS[1] is the copy itself. -> the copy's value after the call
RAISE_COPY = r"""#!lua
local wanted = tonumber(ARGV[1])
local known = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > known then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return known
"""

# A new leader raises the stored epoch before its first decision.
# A: epoch.  Returns the stored epoch after the call.
RAISE_EPOCH = COMMON + r"""
local stored = tonumber(redis.call('GET', P .. ':epoch') or '0')
local mine = A.epoch
if mine > stored then
  redis.call('SET', P .. ':epoch', string.format('%d', mine))
  return mine
end
return stored
"""

# Any node may terminate; with compensation the decider then undoes the completed steps.
# A: id, reason, now, compensate (bool).  -> {outcome: OK | UNKNOWN | ENDED, detail (the status)}
TERMINATE = COMMON + r"""
local id = A.id
local key = wf_key(id)
local st = redis.call('HGET', key, 'st')
if not st then return result({outcome = 'UNKNOWN', detail = ''}) end
if TERMINAL[st] then return result({outcome = 'ENDED', detail = st}) end
if A.compensate and st ~= 'COMPENSATING' then
  set_status(id, key, 'COMPENSATING')
  redis.call('HSET', key, 'reason', A.reason)
  bump(id, key, A.now)
  event(id, A.now)
  return result({outcome = 'OK', detail = st})
end
terminate_workflow(id, A.reason, A.now)
return result({outcome = 'OK', detail = st})
"""

# A status change an operator asks for (pause, resume), optionally with a command for the
# decider (retry, rerun, skip, restart), allowed only from the listed statuses.
# A: id, allowed (list of statuses), new_status ('' = unchanged), now.  ARGV[2]: command json ('' = none).
# -> {outcome: OK | UNKNOWN | STATE (not an allowed status), detail (the status)}
OPERATE = COMMON + r"""
local command = ARGV[2]
local id = A.id
local key = wf_key(id)
local st = redis.call('HGET', key, 'st')
if not st then return result({outcome = 'UNKNOWN', detail = ''}) end
local allowed = false
for _, status in ipairs(A.allowed) do if status == st then allowed = true end end
if not allowed then return result({outcome = 'STATE', detail = st}) end
if command ~= '' then
  local n = redis.call('HINCRBY', key, 'cmdseq', 1)
  redis.call('HSET', key, string.format('c:%08d', n), command)
end
if A.new_status ~= '' and A.new_status ~= st then set_status(id, key, A.new_status) end
if st == 'PAUSED' and A.new_status == 'RUNNING' then
  -- resumed: its queued tasks kept their places; tell the nodes to claim them now
  local published = {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 's:' then
      local s = cjson.decode(fields[i + 1])
      if s.status == 'SCHEDULED' and s.queued and not published[s.type] then
        ready(s.type)
        published[s.type] = true
      end
    end
  end
end
bump(id, key, A.now)
event(id, A.now)
return result({outcome = 'OK', detail = st})
"""

# Someone watches a workflow (WatchWorkflow): its changes are published on `changed:<id>` until
# A.ttl ms from now (Redis's clock), and the watcher renews this well before then. The deadline only
# moves later, so one watcher's renewal never cuts another's short; nothing is written for a
# workflow that does not exist. A: id, ttl.  -> 1 watched, 0 no such workflow
WATCH = COMMON + r"""
local key = wf_key(A.id)
if redis.call('EXISTS', key) == 0 then return 0 end
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + A.ttl
if until_ > tonumber(redis.call('HGET', key, 'watch') or '0') then redis.call('HSET', key, 'watch', until_) end
return 1
"""

# A node waits for a workflow's end (ExecuteWorkflow): when it ends, its id is published on that
# node's own channel `done:<A.listener>` (end_workflow). The newest MAX_WAITERS listeners are kept
# (a listener is one node's run; the oldest are the likeliest gone).
# A: id, listener.  -> 1 registered, 0 no such workflow
EXPECT_END = COMMON + r"""
local MAX_WAITERS = 8
local key = wf_key(A.id)
if redis.call('EXISTS', key) == 0 then return 0 end
local kept = {}
for listener in string.gmatch(redis.call('HGET', key, 'waiters') or '', '%S+') do
  if listener == A.listener then return 1 end
  kept[#kept + 1] = listener
end
kept[#kept + 1] = A.listener
redis.call('HSET', key, 'waiters', table.concat(kept, ' ', math.max(1, #kept - MAX_WAITERS + 1)))
return 1
"""

# Bookkeeping of the decide set, fenced when the leader's engine does it: decide `id` again
# at `at` (a parked workflow waits a while), or forget it when the workflow no longer exists
# (always, when `at` is absent). A: [epoch], id, [at].  -> OK | GONE | STALE_EPOCH
DEFER = COMMON + r"""
if A.epoch and not fenced(A.epoch) then return 'STALE_EPOCH' end
if not A.at or redis.call('EXISTS', wf_key(A.id)) == 0 then
  redis.call('ZREM', P .. ':decide', A.id)
  return 'GONE'
end
redis.call('ZADD', P .. ':decide', A.at, A.id)
redis.call('HSET', wf_key(A.id), 'due', 1)
return 'OK'
"""

# Retention: forget workflows that ended before A.cutoff and were archived, with their index
# entries and their entries in the `ended` stream; a workflow that was restarted since (no longer
# terminal, or ended later) keeps its record and only loses the old stream entry. Fenced.
# A: epoch, cutoff, entries [[stream entry id, workflow id], ...].  -> number of workflows forgotten
FORGET_ENDED = COMMON + r"""
if not fenced(A.epoch) then return 'STALE_EPOCH' end
local forgotten = 0
for _, pair in ipairs(A.entries) do
  local entry, id = pair[1], pair[2]
  local key = wf_key(id)
  local st = redis.call('HGET', key, 'st')
  local ended = tonumber(redis.call('HGET', key, 'end') or '0')
  if st and TERMINAL[st] and ended > 0 and ended <= A.cutoff then
    local meta = cjson.decode(redis.call('HGET', key, 'm'))
    redis.call('ZREM', P .. ':idx:all', id)
    redis.call('ZREM', P .. ':idx:st:' .. st, id)
    redis.call('ZREM', P .. ':idx:name:' .. meta.name, id)
    local ns = string.match(meta.name, '^([^:]+):')
    if ns then redis.call('ZREM', P .. ':idx:ns:' .. ns, id) end
    if meta.correlationId and meta.correlationId ~= '' then
      redis.call('ZREM', P .. ':idx:corr:' .. meta.correlationId, id)
    end
    redis.call('ZREM', P .. ':decide', id)
    redis.call('DEL', key)
    forgotten = forgotten + 1
  end
  redis.call('XDEL', P .. ':ended', entry)
end
return forgotten
"""


# ---------------------------------------------------------------- the event bus

# A: topic, key, now, topics (the namespace's topic quota, 0 = none); take (consumer groups), consumer.
# ARGV[2]: payload json.  -> {the event id, {group, entry id, {field, value, ...}} per event taken}, or
# 'TOPICS <n>' (a new topic past the quota; nothing written). The publishing node reads for its own
# consumer of each group in `take` at once, as its blocked XREADGROUP would have after the XADD: the
# event goes to that node's pending list, and the node handles it without a read of its own (a group
# gone meanwhile is skipped). `>` takes the group's oldest undelivered event: this one unless the
# group was behind.
PUBLISH_EVENT = COMMON + r"""
local room, n = topic_room(A.topic, A.topics)
if not room then return 'TOPICS ' .. n end
local id = publish_event(A.topic, ARGV[2], A.key, A.now)
local out = {id}
for _, group in ipairs(A.take or {}) do
  local r = redis.pcall('XREADGROUP', 'GROUP', group, A.consumer, 'COUNT', 1, 'STREAMS', G .. ':ev:' .. A.topic, '>')
  if type(r) == 'table' and r[1] and not r.err then
    local entry = r[1][2][1]
    out[#out + 1] = {group, entry[1], entry[2]}
  end
end
return out
"""

# Count a topic about to be configured or waited on (`wait:<topic>`, A.group non-empty: its consumer
# group is made and the topic watched). A: topic, topics (quota), group.  -> 'OK' | 'TOPICS <n>'
USE_TOPIC = COMMON + r"""
local room, n = topic_room(A.topic, A.topics)
if not room then return 'TOPICS ' .. n end
if A.group ~= '' then
  pcall(redis.call, 'XGROUP', 'CREATE', G .. ':ev:' .. A.topic, A.group, '$', 'MKSTREAM')
  redis.call('SADD', G .. ':evwaits', A.topic)
end
return 'OK'
"""

# A subscription's consumer group (ReceiveEvents), made at the topic's end unless it exists, and
# counted in its namespace's groups (`groups:<ns>`: '<group> <topic>') from its first use. A new
# one past A.groups (0 = no limit), or on a new topic past A.topics, is refused; one made before
# the quotas is let through (and counted). A: topic, group, groups, topics.
# -> 'OK' | 'GROUPS <n>' | 'TOPICS <n>'
ENSURE_GROUP = COMMON + r"""
local stream = G .. ':ev:' .. A.topic
local gkey = G .. ':groups:' .. ns_of_name(A.topic)
local member = A.group .. ' ' .. A.topic
if redis.call('SISMEMBER', gkey, member) == 0 then
  if A.groups > 0 then
    local n = redis.call('SCARD', gkey)
    if n >= A.groups then
      local exists = false
      local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
      for _, g in ipairs(ok and groups or {}) do
        for i = 1, #g, 2 do if g[i] == 'name' and g[i + 1] == A.group then exists = true end end
      end
      if not exists then return 'GROUPS ' .. n end
    end
  end
  local room, n = topic_room(A.topic, A.topics)
  if not room then return 'TOPICS ' .. n end
  redis.call('SADD', gkey, member)
end
pcall(redis.call, 'XGROUP', 'CREATE', stream, A.group, '$', 'MKSTREAM')
return 'OK'
"""

# Register or replace a handler: its consumer group (named after it) reads its topic from the
# events published after the group was first created. A new one past its namespace's quota of
# handlers (A.quota) or of topics (A.topics; 0 = no limit) is refused, writing nothing.
# A: name, topic, quota, topics.  ARGV[2]: handler json.  -> 'OK' | 'HANDLERS <n>' | 'TOPICS <n>'
PUT_HANDLER = COMMON + r"""
local hkey = G .. ':handlers'
local old = redis.call('HGET', hkey, A.name)
if not old and A.quota > 0 then
  local ns, n = ns_of_name(A.name), 0
  for _, name in ipairs(redis.call('HKEYS', hkey)) do
    if ns_of_name(name) == ns then n = n + 1 end
  end
  if n >= A.quota then return 'HANDLERS ' .. n end
end
local room, n = topic_room(A.topic, A.topics)
if not room then return 'TOPICS ' .. n end
if old then
  local was = cjson.decode(old).event
  if was ~= A.topic then pcall(redis.call, 'XGROUP', 'DESTROY', G .. ':ev:' .. was, A.name) end
end
redis.call('HSET', hkey, A.name, ARGV[2])
pcall(redis.call, 'XGROUP', 'CREATE', G .. ':ev:' .. A.topic, A.name, '$', 'MKSTREAM')
return 'OK'
"""

# A: name.  -> 1 removed, 0 unknown
REMOVE_HANDLER = COMMON + r"""
local hkey = G .. ':handlers'
local old = redis.call('HGET', hkey, A.name)
if not old then return 0 end
pcall(redis.call, 'XGROUP', 'DESTROY', G .. ':ev:' .. cjson.decode(old).event, A.name)
redis.call('HDEL', hkey, A.name)
return 1
"""


# One action of a handler for one event, and the record that it was done, in one step: a
# redelivered event finds the record and changes nothing (DUPLICATE). The record
# `handled:<handler>:<event id>#<action index>` lives A.ttl seconds.
# A: handler, event, action (index), kind (complete | fail | terminate | publish), ttl, now;
#    complete/fail: id, task, status, reason; terminate: id, reason; publish: topic, key.
# ARGV[2]: the task's output json, or the published payload json.
# -> {outcome: OK | DUPLICATE | UNKNOWN | ENDED (workflow ended) | STALE (task ended), detail}
EVENT_ACTION = COMMON + r"""
-- the record is kept beside what it guards: the workflow's partition (KEYS[1]), or for a publish the
-- global slot (KEYS[1] is then the global prefix)
local hkey = P .. ':handled:' .. A.handler .. ':' .. A.event .. '#' .. A.action
if redis.call('EXISTS', hkey) == 1 then return result({outcome = 'DUPLICATE', detail = ''}) end
local detail = ''
if A.kind == 'publish' then
  detail = publish_event(A.topic, ARGV[2], A.key, A.now)
elseif A.kind == 'terminate' then
  local st = terminate_workflow(A.id, A.reason, A.now)
  if not st then return result({outcome = 'UNKNOWN', detail = ''}) end
  if st ~= 'OK' then return result({outcome = 'ENDED', detail = st}) end
else
  local key = wf_key(A.id)
  local st = redis.call('HGET', key, 'st')
  if not st then return result({outcome = 'UNKNOWN', detail = ''}) end
  if TERMINAL[st] then return result({outcome = 'ENDED', detail = st}) end
  local s = task_state(key, A.task)
  if not s then return result({outcome = 'UNKNOWN', detail = ''}) end
  if s.status == 'SCHEDULED' then
    redis.call('ZREM', P .. ':q:' .. s.type, A.id .. '|' .. A.task)
  elseif s.status == 'IN_PROGRESS' then
    drop_lease(A.id, A.task, s.type)
  else
    return result({outcome = 'STALE', detail = s.status})
  end
  finish_task(A.id, key, A.task, s, A.status, ARGV[2], A.reason, A.now)
end
redis.call('SET', hkey, '1', 'EX', A.ttl)
return result({outcome = 'OK', detail = detail})
"""

# Move an event a handler could not handle to the dead-letter topic and acknowledge it, in one
# step; nothing when it was acknowledged already (another node handled or dead-lettered it).
# A: topic, handler, event, key, dead (the dead-letter topic), now.  ARGV[2]: the dead letter json.
# -> 1 dead-lettered, 0 already acknowledged
DEAD_LETTER = COMMON + r"""
local stream = G .. ':ev:' .. A.topic
local pending = redis.call('XPENDING', stream, A.handler, A.event, A.event, 1)
if #pending == 0 then return 0 end
publish_event(A.dead, ARGV[2], A.key, A.now)
redis.call('XACK', stream, A.handler, A.event)
return 1
"""

# Take over a handler's events that some consumer (a dead node, or this one before a restart)
# received but did not acknowledge for A.idle ms; one delivered more than A.max times goes to the
# dead-letter topic instead, with the reason, and is acknowledged.
# A: topic, handler, consumer, idle, count, max, cursor, dead, now, shown_topic (the topic as its
# namespace names it, for the letter).
# -> {next cursor, {event id, payload json, key, published ms, deliveries}, ...}
CLAIM_EVENTS = COMMON + r"""
local stream = G .. ':ev:' .. A.topic
local ok, r = pcall(redis.call, 'XAUTOCLAIM', stream, A.handler, A.consumer, A.idle, A.cursor, 'COUNT', A.count)
if not ok then return {'0-0'} end
local out = {r[1]}
for _, e in ipairs(r[2]) do
  local id, flat = e[1], e[2]
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  local p = redis.call('XPENDING', stream, A.handler, id, id, 1)
  local n = (p[1] and tonumber(p[1][4])) or 1
  if n > A.max then
    local letter = '{"handler":' .. cjson.encode(A.handler) .. ',"topic":' .. cjson.encode(A.shown_topic) ..
      ',"eventId":' .. cjson.encode(id) .. ',"key":' .. cjson.encode(f.k or '') ..
      ',"deliveries":' .. (n - 1) .. ',"reason":' ..
      cjson.encode('not acknowledged after ' .. (n - 1) .. ' deliveries (the consumers failed or died)') ..
      ',"payload":' .. (f.p or 'null') .. '}'
    publish_event(A.dead, letter, f.k or '', A.now)
    redis.call('XACK', stream, A.handler, id)
  else
    out[#out + 1] = {id, f.p or '{}', f.k or '', f.at or '0', n}
  end
end
return out
"""


# ---------------------------------------------------------------- a task type's limits
#
# A type's concurrency and rate limits hold across every partition, so they are counted in the
# global slot, where a partition's script cannot reach: a claim of a limited type first reserves its
# room here (LIMIT_ACQUIRE), claims that many in the partitions (CLAIM with A.granted), then turns the
# reservation into the tasks it took (LIMIT_SETTLE). An attempt whose lease ends is taken out of the
# count by LIMIT_RELEASE (see drop_lease). A reservation a claimer never settled (it died) lapses
# after RESERVATION_MS. KEYS[1] is the global prefix.

# A: type, count, now, token.  -> the room granted (0 .. count); count when the type has no limits
LIMIT_ACQUIRE = COMMON + r"""
local RESERVATION_MS = 10000
local stored = redis.call('HGET', G .. ':limits', A.type)
if not stored then return A.count end
local conc, rate, per = string.match(stored, '^(%d+)|(%d+)|(%d+)$')
conc, rate, per = tonumber(conc), tonumber(rate), tonumber(per)
local resv = G .. ':resv:' .. A.type
redis.call('ZREMRANGEBYSCORE', resv, '-inf', A.now)   -- reservations that were never settled
local held = redis.call('ZCARD', resv)
local free = math.huge   -- the room but for the reservations held
if conc > 0 then free = math.min(free, conc - redis.call('ZCARD', G .. ':inprog:' .. A.type)) end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', G .. ':rate:' .. A.type, '-inf', A.now - per)
  free = math.min(free, rate - redis.call('ZCARD', G .. ':rate:' .. A.type))
end
local room = math.min(A.count, free - held)
if held > 0 and room < A.count and free > room then
  -- narrowed by another claim's reservation: wake the claimers if it gives some back (LIMIT_SETTLE)
  redis.call('SET', resv .. ':waiting', 1, 'PX', RESERVATION_MS)
end
if room <= 0 then return 0 end
for i = 1, room do redis.call('ZADD', resv, A.now + RESERVATION_MS, A.token .. ':' .. i) end
return room
"""

# A: type, token, granted, now, members (the attempts claimed, id|task).  -> 1
LIMIT_SETTLE = COMMON + r"""
local resv = G .. ':resv:' .. A.type
for i = 1, A.granted do redis.call('ZREM', resv, A.token .. ':' .. i) end
local stored = redis.call('HGET', G .. ':limits', A.type)
if stored and #A.members > 0 then
  local conc, rate = string.match(stored, '^(%d+)|(%d+)|')
  for _, member in ipairs(A.members) do
    if tonumber(conc) > 0 then redis.call('ZADD', G .. ':inprog:' .. A.type, A.now, member) end
    if tonumber(rate) > 0 then redis.call('ZADD', G .. ':rate:' .. A.type, A.now, member) end
  end
end
-- room given back that a claim was refused for meanwhile: its claimer may take it now
if #A.members < A.granted and redis.call('DEL', resv .. ':waiting') == 1 then ready(A.type) end
return 1
"""

# A: freed (attempts whose lease ended: type|id|task).  -> how many were in a count
LIMIT_RELEASE = COMMON + r"""
local released, woken = 0, {}
for _, freed in ipairs(A.freed) do
  local sep = string.find(freed, '|', 1, true)
  local ttype, member = string.sub(freed, 1, sep - 1), string.sub(freed, sep + 1)
  if redis.call('ZREM', G .. ':inprog:' .. ttype, member) == 1 then
    released = released + 1
    if not woken[ttype] then
      woken[ttype] = true
      ready(ttype)
    end
  end
end
return released
"""


# The events of EVENT tasks, relayed from a partition's outbox to their topics, each once: an entry
# relayed twice (the deciding node and the leader's sweep at once, or a relay that died before
# removing what it relayed) is published the first time only (`relayed:<partition>:<entry id>`, kept
# a day). A: items [{k: "<partition>/<entry id>", t: topic, at: ms}].  ARGV[2...]: their payloads.
# -> how many were published now
RELAY_EVENTS = COMMON + r"""
local published = 0
for i, item in ipairs(A.items) do
  if redis.call('SET', G .. ':relayed:' .. item.k, 1, 'NX', 'EX', 86400) then
    publish_event(item.t, ARGV[i + 1], '', item.at)
    published = published + 1
  end
end
return published
"""
