"""The Lua scripts behind every state transition in Redis.

Each script is one atomic step. Scripts that only the leader's engine runs
(`apply_decision`, `expire_lease`) first compare the caller's epoch with the
stored one and refuse an older epoch: that is the fencing that keeps a paused or
partitioned ex-leader from changing anything once a newer leader took over.
Every script that changes a workflow bumps its `rev` field; the decider's write
is conditional on the revision it read, so no event is ever overwritten.

Key names are built from the prefix passed as ARGV[1]. The workflow hash key
carries the workflow id as a hash tag (`P:wf:{ID}`); the queues, leases and
indexes are shared keys, so this layout targets a single Redis (with replicas
and Sentinel), not Redis Cluster.
"""

COMMON = r"""
local P = ARGV[1]
local function wf_key(id) return P .. ':wf:{' .. id .. '}' end
local function set_status(id, key, new_status)
  local old = redis.call('HGET', key, 'st')
  local created = redis.call('HGET', key, 'created') or '0'
  if old then redis.call('ZREM', P .. ':idx:st:' .. old, id) end
  redis.call('ZADD', P .. ':idx:st:' .. new_status, created, id)
  redis.call('HSET', key, 'st', new_status)
end
local function wake(id, at)
  -- LT: an earlier wake-up wins; a new member is always added
  redis.call('ZADD', P .. ':decide', 'LT', at, id)
  redis.call('PUBLISH', P .. ':wake', id)
end
-- Every workflow that reaches a terminal status is appended to a capped stream:
-- the audit trail that drills read to prove nothing completed twice.
local function record_end(id, status, now)
  redis.call('XADD', P .. ':ended', 'MAXLEN', '~', 1000000, '*', 'wf', id, 'st', status, 'at', now)
end
local function fenced(epoch)
  local stored = tonumber(redis.call('GET', P .. ':epoch') or '0')
  return tonumber(epoch) >= stored
end
"""

# ARGV: P, workflow id, idempotency key ('' = none), now, meta json, definition json,
#       name, correlation id, idempotency ttl seconds
START_WORKFLOW = COMMON + r"""
local id, idem, now = ARGV[2], ARGV[3], ARGV[4]
if idem ~= '' then
  local seen = redis.call('GET', P .. ':idem:' .. idem)
  if seen then return {0, seen} end
  redis.call('SET', P .. ':idem:' .. idem, id, 'EX', ARGV[9])
end
local key = wf_key(id)
redis.call('HSET', key, 'm', ARGV[5], 'def', ARGV[6], 'created', now, 'upd', now, 'rev', 1)
set_status(id, key, 'RUNNING')
redis.call('ZADD', P .. ':idx:all', now, id)
redis.call('ZADD', P .. ':idx:name:' .. ARGV[7], now, id)
if ARGV[8] ~= '' then redis.call('ZADD', P .. ':idx:corr:' .. ARGV[8], now, id) end
wake(id, now)
return {1, id}
"""

# ARGV: P, epoch, workflow id, expected revision, now, new status ('' = unchanged),
#       output json, reason, wake-at ms ('' = none),
#       n, n x (field, value), n, n x (task type, task id) to enqueue,
#       n, n x (task type, task id) to dequeue, n, n x task id whose lease to drop
APPLY_DECISION = COMMON + r"""
if not fenced(ARGV[2]) then return 'STALE_EPOCH' end
local id = ARGV[3]
local key = wf_key(id)
local rev = redis.call('HGET', key, 'rev')
if not rev then return 'GONE' end
if rev ~= ARGV[4] then return 'CONFLICT' end
local now = ARGV[5]
if ARGV[6] ~= '' then
  set_status(id, key, ARGV[6])
  redis.call('HSET', key, 'out', ARGV[7], 'reason', ARGV[8])
  if ARGV[6] ~= 'RUNNING' then
    redis.call('HSET', key, 'end', now)
    record_end(id, ARGV[6], now)
  end
end
local i = 10
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('HSET', key, ARGV[i + 2 * j - 1], ARGV[i + 2 * j]) end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
local published = {}
for j = 1, n do
  local qtype, tid = ARGV[i + 2 * j - 1], ARGV[i + 2 * j]
  redis.call('ZADD', P .. ':q:' .. qtype, now, id .. '|' .. tid)
  if not published[qtype] then
    redis.call('PUBLISH', P .. ':ready', qtype)
    published[qtype] = true
  end
end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZREM', P .. ':q:' .. ARGV[i + 2 * j - 1], id .. '|' .. ARGV[i + 2 * j]) end
i = i + 2 * n + 1
n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZREM', P .. ':leases', id .. '|' .. ARGV[i + j]) end
redis.call('HINCRBY', key, 'rev', 1)
redis.call('HSET', key, 'upd', now)
redis.call('ZREM', P .. ':decide', id)
if ARGV[9] ~= '' then redis.call('ZADD', P .. ':decide', ARGV[9], id) end
return 'OK'
"""

# Hands up to n queued tasks of one type to a worker, atomically with their lease.
# ARGV: P, task type, n, now, worker id.  Returns a flat list: id, task id, spec json, lease ms, ...
CLAIM = COMMON + r"""
local qkey = P .. ':q:' .. ARGV[2]
local now = tonumber(ARGV[4])
local out = {}
local wanted = tonumber(ARGV[3])
local claimed = 0
while claimed < wanted do
  local popped = redis.call('ZPOPMIN', qkey, wanted - claimed)
  if #popped == 0 then break end
  for j = 1, #popped, 2 do
    local member = popped[j]
    local sep = string.find(member, '|', 1, true)
    local id, tid = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local key = wf_key(id)
    local raw = redis.call('HGET', key, 's:' .. tid)
    if raw and redis.call('HGET', key, 'st') == 'RUNNING' then
      local s = cjson.decode(raw)
      if s.status == 'SCHEDULED' then
        s.status = 'IN_PROGRESS'
        s.worker = ARGV[5]
        s.started = now
        s.queued = false
        redis.call('HSET', key, 's:' .. tid, cjson.encode(s))
        redis.call('HINCRBY', key, 'rev', 1)
        redis.call('ZADD', P .. ':leases', now + s.lease_ms, member)
        if s.timeout_ms and s.timeout_ms > 0 then wake(id, now + s.timeout_ms) end
        claimed = claimed + 1
        out[#out + 1] = id
        out[#out + 1] = tid
        out[#out + 1] = redis.call('HGET', key, 't:' .. tid)
        out[#out + 1] = s.lease_ms
      end
    end
  end
end
return out
"""

# ARGV: P, workflow id, task id, now, worker id.  Returns the new lease in ms, or 0 when it is gone.
HEARTBEAT = COMMON + r"""
local key = wf_key(ARGV[2])
local raw = redis.call('HGET', key, 's:' .. ARGV[3])
if not raw then return 0 end
local s = cjson.decode(raw)
if s.status ~= 'IN_PROGRESS' or s.worker ~= ARGV[5] then return 0 end
redis.call('ZADD', P .. ':leases', 'XX', tonumber(ARGV[4]) + s.lease_ms, ARGV[2] .. '|' .. ARGV[3])
return s.lease_ms
"""

# A worker's result for one attempt. Idempotent: the same result twice is DUPLICATE;
# a result for an attempt that is no longer in progress is STALE and changes nothing.
# The attempt must still be held by the reporting worker: after a release or a lease
# expiry the same task may be in another worker's hands.
# ARGV: P, workflow id, task id, status, output json, reason, now, worker id
COMPLETE_TASK = COMMON + r"""
local id, tid = ARGV[2], ARGV[3]
local key = wf_key(id)
local raw = redis.call('HGET', key, 's:' .. tid)
if not raw then return 'UNKNOWN' end
local s = cjson.decode(raw)
if s.status ~= 'IN_PROGRESS' then
  if s.status == ARGV[4] and s.worker == ARGV[8] then return 'DUPLICATE' end
  return 'STALE:' .. s.status
end
if s.worker ~= ARGV[8] then return 'STALE:held by another worker' end
s.status = ARGV[4]
s.ended = tonumber(ARGV[7])
s.reason = ARGV[6]
redis.call('HSET', key, 's:' .. tid, cjson.encode(s), 'o:' .. tid, ARGV[5])
redis.call('ZREM', P .. ':leases', id .. '|' .. tid)
redis.call('HINCRBY', key, 'rev', 1)
wake(id, ARGV[7])
return 'OK'
"""

# Puts an unfinished attempt back in its queue without counting a failure.
# ARGV: P, workflow id, task id, now, worker id
RELEASE_TASK = COMMON + r"""
local id, tid = ARGV[2], ARGV[3]
local key = wf_key(id)
local raw = redis.call('HGET', key, 's:' .. tid)
if not raw then return 0 end
local s = cjson.decode(raw)
if s.status ~= 'IN_PROGRESS' or s.worker ~= ARGV[5] then return 0 end
s.status = 'SCHEDULED'
s.queued = true
s.worker = ''
s.started = 0
redis.call('HSET', key, 's:' .. tid, cjson.encode(s))
redis.call('HINCRBY', key, 'rev', 1)
redis.call('ZREM', P .. ':leases', id .. '|' .. tid)
redis.call('ZADD', P .. ':q:' .. s.type, ARGV[4], id .. '|' .. tid)
redis.call('PUBLISH', P .. ':ready', s.type)
return 1
"""

# The reaper: an attempt whose lease passed without heartbeat or result times out.
# ARGV: P, epoch, workflow id, task id, now
EXPIRE_LEASE = COMMON + r"""
if not fenced(ARGV[2]) then return 'STALE_EPOCH' end
local id, tid, now = ARGV[3], ARGV[4], tonumber(ARGV[5])
local member = id .. '|' .. tid
local deadline = tonumber(redis.call('ZSCORE', P .. ':leases', member) or '0')
if deadline > now then return 'RENEWED' end
redis.call('ZREM', P .. ':leases', member)
local key = wf_key(id)
local raw = redis.call('HGET', key, 's:' .. tid)
if not raw then return 'GONE' end
local s = cjson.decode(raw)
if s.status ~= 'IN_PROGRESS' then return 'GONE' end
s.status = 'TIMED_OUT'
s.ended = now
s.reason = 'lease expired: no heartbeat or result within ' .. s.lease_ms .. ' ms (worker ' .. s.worker .. ')'
redis.call('HSET', key, 's:' .. tid, cjson.encode(s))
redis.call('HINCRBY', key, 'rev', 1)
wake(id, now)
return 'EXPIRED'
"""

# A new leader raises the stored epoch before its first decision.
# ARGV: P, epoch.  Returns the stored epoch after the call.
RAISE_EPOCH = COMMON + r"""
local stored = tonumber(redis.call('GET', P .. ':epoch') or '0')
local mine = tonumber(ARGV[2])
if mine > stored then
  redis.call('SET', P .. ':epoch', ARGV[2])
  return mine
end
return stored
"""

# Any node may terminate; the decider then cancels what is still active.
# ARGV: P, workflow id, reason, now
TERMINATE = COMMON + r"""
local id = ARGV[2]
local key = wf_key(id)
local st = redis.call('HGET', key, 'st')
if not st then return 'UNKNOWN' end
if st ~= 'RUNNING' then return 'TERMINAL:' .. st end
set_status(id, key, 'TERMINATED')
redis.call('HSET', key, 'reason', ARGV[3], 'end', ARGV[4], 'upd', ARGV[4])
record_end(id, 'TERMINATED', ARGV[4])
redis.call('HINCRBY', key, 'rev', 1)
wake(id, ARGV[4])
return 'OK'
"""
