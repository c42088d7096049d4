"""The Lua scripts of the Redis store. Every key a script touches is passed in KEYS and, for the
partition scripts, shares the partition's hash tag `{pN}`, so each script runs in one Redis
Cluster slot.

`APPEND` is the single sink where facts become durable: it checks the fencing epoch first (an
owner whose lease was taken over writes nothing), then per command the command-id
deduplication, the expected version, and only then appends. One call appends a whole batch of
commands (possibly of many actors) of one partition; see `APPEND` for the argument layout.
The lease scripts serve every role (workers, projectors): one lease and one epoch per partition
and role.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "ACQUIRE",
    "APPEND",
    "COUNT_AFTER",
    "FIRE_TIMERS",
    "RELEASE",
    "RENEW",
    "UNMARK",
    "Script",
]


class Script:
    """A Lua script and its SHA1 (what EVALSHA names it by, computed here: no round trip)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


#: KEYS[1] a stream. ARGV[1] the first id to count, ARGV[2] the most to count.
#: The number of entries from ARGV[1] on, without sending them: only the count crosses the wire.
COUNT_AFTER = Script(
    "count_after",
    """
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
""",
)

#: KEYS[1] lease, KEYS[2] epoch. ARGV[1] owner, ARGV[2] ttl ms.
#: Takes the lease when it is free or already the owner's; each acquisition bumps the epoch
#: (the fencing token) and returns it. Nil when another owner holds the lease.
ACQUIRE = Script(
    "acquire",
    """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
""",
)

#: KEYS[1] lease, KEYS[2] epoch. ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] my epoch.
#: Extends the lease only if we still hold it and no newer epoch exists. 1 renewed, 0 lost.
RENEW = Script(
    "renew",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
""",
)

#: KEYS[1] lease. ARGV[1] owner. Deletes the lease only if we hold it.
RELEASE = Script(
    "release",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

#: KEYS[1] a key. ARGV[1] a value. Deletes the key only if it still holds the value.
UNMARK = Script(
    "unmark",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

#: Turn due timers into commands, atomically and fenced.
#: KEYS[1] epoch, KEYS[2] timers zset, KEYS[3] command stream, KEYS[4] refused-writes counter.
#: ARGV[1] my epoch, ARGV[2] n, then n triples (member, due, command envelope or '' = drop).
#: A timer is fired (XADD) and removed only if its due is still the one the worker saw.
#: Returns the number of commands queued.
FIRE_TIMERS = Script(
    "fire_timers",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('INCR', KEYS[4])
  return redis.error_reply('FENCED')
end
local fired = 0
for i = 0, tonumber(ARGV[2]) - 1 do
  local member, due, body = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  local score = redis.call('ZSCORE', KEYS[2], member)
  if score and tonumber(score) == tonumber(due) then
    if body ~= '' then
      redis.call('XADD', KEYS[3], '*', 'c', body)
      fired = fired + 1
    end
    redis.call('ZREM', KEYS[2], member)
  end
end
return fired
""",
)

#: Append the outcomes of a batch of commands of one partition.
#:
#: KEYS: [1] epoch, [2] partition log, [3] command stream, [4] timers zset,
#:       [5] refused-writes counter (INCRed when a stale owner is fenced),
#:       then 2 per actor: [event stream, snapshot key], then 1 per command: its outcome key.
#: ARGV: [1] my epoch, [2] consumer group, [3] outcome ttl ms, [4] n actors, [5] n commands,
#:       then per command:
#:         entry id (to XACK), actor index (0 = none), expected version (-1 = no check,
#:         -2 = a repeat of an earlier command of this batch: replay its outcome once stored),
#:         reply address ('' = none: the outcome is published to the shard channel
#:         `sd:{pN}:reply:<address>` of the partition, in the script's own slot),
#:         outcome (msgpack; '' = only ack / replay stored outcome),
#:         n events, events..., n routed, routed command envelopes...,
#:         n timer upserts, (member, due)..., n timer removals, members...,
#:         snapshot ('' = none), change channel ('' = none), change message
#: The change message is published on its channel only when the command's append is accepted:
#: the session's live view, an inline projection (never for a refused or duplicate command).
#: Result, per command: 1 appended (or acked), the stored outcome (a duplicate command id:
#: nothing appended), 0 (a repeat whose original is not stored yet: not acked), or
#: -(actual version + 1) when the expected version did not match (nothing appended, not acked;
#: later commands of that actor in the batch are refused the same way).
#: Raises FENCED, writing nothing but the refused-writes counter, when the partition's epoch is
#: no longer ours.
APPEND = Script(
    "append",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('INCR', KEYS[5])
  return redis.error_reply('FENCED')
end
local log, cmds, timers = KEYS[2], KEYS[3], KEYS[4]
local group, ttl = ARGV[2], ARGV[3]
local replies = string.match(KEYS[1], '^[^}]*}') .. ':reply:'  -- the partition's reply prefix
local n_actors, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local out_base = 5 + 2 * n_actors
local versions, failed = {}, {}
local result, acks = {}, {}

local function stream_version(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    return tonumber(string.match(last[1][1], '^(%d+)'))
  end
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then
        return tonumber(string.match(info[j + 1], '^(%d+)'))
      end
    end
  end
  return 0
end

local p = 6
for i = 1, n do
  local entry_id, actor = ARGV[p], tonumber(ARGV[p + 1])
  local expected, reply, outcome = tonumber(ARGV[p + 2]), ARGV[p + 3], ARGV[p + 4]
  local n_events = tonumber(ARGV[p + 5])
  local ev0 = p + 6
  p = ev0 + n_events
  local n_routed = tonumber(ARGV[p])
  local rt0 = p + 1
  p = rt0 + n_routed
  local n_set = tonumber(ARGV[p])
  local ts0 = p + 1
  p = ts0 + 2 * n_set
  local n_del = tonumber(ARGV[p])
  local td0 = p + 1
  p = td0 + n_del
  local snap, chan, change = ARGV[p], ARGV[p + 1], ARGV[p + 2]
  p = p + 3

  local okey = KEYS[out_base + i]
  local stored = redis.call('GET', okey)
  if stored then
    if reply ~= '' then redis.call('SPUBLISH', replies .. reply, stored) end
    acks[#acks + 1] = entry_id
    result[i] = stored
  elseif expected == -2 then
    result[i] = 0
  elseif actor > 0 and failed[actor] then
    result[i] = -(versions[actor] + 1)
  else
    local stream = ''
    if actor > 0 then
      stream = KEYS[4 + 2 * actor]
      if versions[actor] == nil then versions[actor] = stream_version(stream) end
    end
    if actor > 0 and expected >= 0 and versions[actor] ~= expected then
      failed[actor] = true
      result[i] = -(versions[actor] + 1)
    else
      for k = 0, n_events - 1 do
        local ev = ARGV[ev0 + k]
        redis.call('XADD', stream, (expected + k + 1) .. '-0', 'e', ev)
        redis.call('XADD', log, '*', 'e', ev)
      end
      if n_events > 0 then versions[actor] = expected + n_events end
      for k = 0, n_routed - 1 do
        redis.call('XADD', cmds, '*', 'c', ARGV[rt0 + k])
      end
      for k = 0, n_set - 1 do
        local b = ts0 + 2 * k
        redis.call('ZADD', timers, ARGV[b + 1], ARGV[b])
      end
      for k = 0, n_del - 1 do
        redis.call('ZREM', timers, ARGV[td0 + k])
      end
      if snap ~= '' then redis.call('SET', KEYS[5 + 2 * actor], snap) end
      if chan ~= '' then redis.call('SPUBLISH', chan, change) end
      if outcome ~= '' then
        redis.call('SET', okey, outcome, 'PX', ttl)
        if reply ~= '' then redis.call('SPUBLISH', replies .. reply, outcome) end
      end
      acks[#acks + 1] = entry_id
      result[i] = 1
    end
  end
end
for j = 1, #acks, 500 do
  redis.call('XACK', cmds, group, unpack(acks, j, math.min(j + 499, #acks)))
end
return result
""",
)
