"""The gateway's operations: one transport-neutral function per use case, shared by every
adapter (REST `gateway/rest.py`, WebSocket `gateway/ws.py`, SSE `gateway/sse.py`, and gRPC next).

Each operation takes the process `Context`, the caller's `Claims` and a typed request (a
msgspec Struct), and returns a typed result or raises an `ApiError` with a stable code (the
deciders' refusals keep theirs). An adapter only decodes its wire format into the request,
calls, and encodes the result or the error; nothing an adapter needs lives in another adapter.

- writes are commands to actors, authorized by the deciders (the command carries the caller);
  their answers come from the command's outcome (`Outcome.result`), never from events read back;
- reads authorize with one owner lookup (`reads.authorize_read`) and read the read models, or
  the session's live state (`reads.current_session`);
- a client's idempotency key becomes a command id in one place (`commands.idempotency`).

Modules by use case: `sessions` (start / end / refresh, the user's session on a device),
`state` (snapshot, incremental changes, conflicts, the snapshot read), `handoffs`, `devices`,
`simulators`, `admin`, `presence` (connections that join and leave), `access` (tokens, rate
limits, roles), and underneath `commands` (sending, idempotency), `reads` and `context`.
"""

from gateway.operations.context import Context

__all__ = ["Context"]
