"""A session's devices (seed 004): the list, read from the read model, and a forced
disconnect, a command the session actor authorizes (its connections are closed by every
gateway when the DeviceLeft change arrives)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from events.session import DisconnectDevice
from gateway.auth import Claims
from gateway.operations.commands import WriteResult, idempotency, now_ms, send, written
from gateway.operations.reads import Device, authorize_read, device_rows

if TYPE_CHECKING:
    from gateway.operations.context import Context

__all__ = ["DeviceDisconnect", "disconnect_device", "list_devices"]


class DeviceDisconnect(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    device_id: str
    idempotency_key: str | None = None


async def list_devices(ctx: Context, claims: Claims, session_id: str) -> list[Device]:
    await authorize_read(ctx, claims, session_id)
    return await device_rows(ctx, session_id)


async def disconnect_device(ctx: Context, claims: Claims, req: DeviceDisconnect) -> WriteResult:
    key = idempotency(
        claims, req.session_id, "disconnect_device", req.idempotency_key, req.device_id
    )
    outcome = await send(
        ctx,
        req.session_id,
        DisconnectDevice(
            at=now_ms(),
            user_id=claims.user_id,
            admin=claims.is_admin,
            device_id=req.device_id,
            reason="disconnected",
        ),
        idempotency=key,
    )
    return WriteResult(**written(outcome, key))
