"""The two clients: `SessiondClient` (blocking, httpx.Client) and `AsyncSessiondClient`
(asyncio, httpx.AsyncClient). Both bind every call of `_core.CALLS` as a method returning
`(result, error)`, and offer `watch`, an iterator of the session's changes that reconnects by
itself and resumes after the last version it delivered (the SSE stream's `since`)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from sessiond_client._core import (
    CALLS,
    FINAL_STATUSES,
    Call,
    ClientError,
    Resume,
    RetryPolicy,
    SseParser,
    token_subject,
)
from sessiond_client.types import Change

__all__ = ["AsyncSessiondClient", "SessiondClient", "WatchError"]

#: How long a watch waits for a byte before it reconnects: the gateway sends a keep-alive
#: every heartbeat interval (15 s by default).
WATCH_READ_TIMEOUT_S = 45.0


class WatchError(Exception):
    """A watch that cannot go on: the gateway refused it for good (token, access, no such
    session), or it failed `RetryPolicy.attempts` times in a row. `error` says why."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(str(error))
        self.error = error


class _Base:
    def __init__(self, token: str, retry: RetryPolicy | None) -> None:
        self.token = token
        self.user_id = token_subject(token)
        self.retry = retry or RetryPolicy()

    def _headers(self, call: Call | None = None) -> dict[str, str]:
        extra = call.headers() if call is not None else {}
        return {"Authorization": f"Bearer {self.token}", **extra}

    def _refusal(self, call: Call) -> ClientError | None:
        """Seed 003 names the user: it must be the token's (checked here, nothing sent)."""
        if call.user_id is not None and self.user_id is not None and call.user_id != self.user_id:
            return ClientError("SESSION_FORBIDDEN", "user_id is not the token's user", 403)
        return None

    @staticmethod
    def _answer(call: Call, response: httpx.Response) -> tuple[Any, ClientError | None]:
        if response.is_success:
            try:
                return call.decode(response.content), None
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                return None, ClientError("BAD_ANSWER", str(exc), response.status_code)
        return None, ClientError.from_answer(
            response.status_code, response.content, response.headers
        )

    @staticmethod
    def _offline(exc: Exception) -> ClientError:
        return ClientError("CONNECTION_ERROR", str(exc) or type(exc).__name__)

    @staticmethod
    def _events_path(session_id: str) -> str:
        return f"/api/sessions/{quote(session_id, safe='')}/events"

    def _watch_failed(self, failures: int, error: ClientError) -> float:
        """The wait before the next reconnect, or WatchError when it must stop."""
        if error.status in FINAL_STATUSES:
            raise WatchError(error)
        delay = self.retry.delay(failures, error, write=False)
        if delay is None:
            raise WatchError(error)
        return delay


class SessiondClient(_Base):
    """The blocking client. `SessiondClient(base_url, token)`; close it (or use `with`)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(token, retry)
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SessiondClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, call: Call) -> tuple[Any, ClientError | None]:
        """Send `call`, retrying as the policy says (a write with its one idempotency key)."""
        refused = self._refusal(call)
        if refused is not None:
            return None, refused
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    call.method,
                    call.path,
                    json=call.body,
                    params=call.query,
                    headers=self._headers(call),
                )
            except httpx.TransportError as exc:
                result, error = None, self._offline(exc)
            else:
                result, error = self._answer(call, response)
            if error is None:
                return result, None
            delay = self.retry.delay(attempt, error, write=call.write)
            if delay is None:
                return None, error
            time.sleep(delay)
            attempt += 1

    def watch(
        self, session_id: str, *, since: int | None = None, device_id: str | None = None
    ) -> Iterator[Change]:
        """The session's changes after `since` (None: from now on), first a `connected`
        message; reconnects by itself and resumes after the last version delivered, so no
        change is missed or repeated. Ends when the session ends; raises `WatchError` when it
        cannot go on."""
        resume, failures = Resume(since), 0
        timeout = httpx.Timeout(self.http.timeout.connect, read=WATCH_READ_TIMEOUT_S)
        while not resume.over:
            error: ClientError
            try:
                with self.http.stream(
                    "GET",
                    self._events_path(session_id),
                    params=resume.query(device_id),
                    headers=self._headers(),
                    timeout=timeout,
                ) as response:
                    if response.status_code == 410:
                        return
                    if not response.is_success:
                        raise _Refused(
                            ClientError.from_answer(
                                response.status_code, response.read(), response.headers
                            )
                        )
                    failures, parser = 0, SseParser()
                    for line in response.iter_lines():
                        change = parser.feed(line)
                        if change is not None and resume.accept(change):
                            yield change
                            if resume.over:
                                return
                error = ClientError("STREAM_ENDED", "the stream ended; resuming")
            except _Refused as exc:
                error = exc.error
            except httpx.TransportError as exc:
                error = self._offline(exc)
            time.sleep(self._watch_failed(failures, error))
            failures += 1


class AsyncSessiondClient(_Base):
    """The asyncio client: the same calls, awaited. `async with AsyncSessiondClient(...)`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(token, retry)
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncSessiondClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def execute(self, call: Call) -> tuple[Any, ClientError | None]:
        """Send `call`, retrying as the policy says (a write with its one idempotency key)."""
        refused = self._refusal(call)
        if refused is not None:
            return None, refused
        attempt = 0
        while True:
            try:
                response = await self.http.request(
                    call.method,
                    call.path,
                    json=call.body,
                    params=call.query,
                    headers=self._headers(call),
                )
            except httpx.TransportError as exc:
                result, error = None, self._offline(exc)
            else:
                result, error = self._answer(call, response)
            if error is None:
                return result, None
            delay = self.retry.delay(attempt, error, write=call.write)
            if delay is None:
                return None, error
            await asyncio.sleep(delay)
            attempt += 1

    async def watch(
        self, session_id: str, *, since: int | None = None, device_id: str | None = None
    ) -> AsyncIterator[Change]:
        """`SessiondClient.watch`, asynchronously."""
        resume, failures = Resume(since), 0
        timeout = httpx.Timeout(self.http.timeout.connect, read=WATCH_READ_TIMEOUT_S)
        while not resume.over:
            error: ClientError
            try:
                async with self.http.stream(
                    "GET",
                    self._events_path(session_id),
                    params=resume.query(device_id),
                    headers=self._headers(),
                    timeout=timeout,
                ) as response:
                    if response.status_code == 410:
                        return
                    if not response.is_success:
                        raise _Refused(
                            ClientError.from_answer(
                                response.status_code, await response.aread(), response.headers
                            )
                        )
                    failures, parser = 0, SseParser()
                    async for line in response.aiter_lines():
                        change = parser.feed(line)
                        if change is not None and resume.accept(change):
                            yield change
                            if resume.over:
                                return
                error = ClientError("STREAM_ENDED", "the stream ended; resuming")
            except _Refused as exc:
                error = exc.error
            except httpx.TransportError as exc:
                error = self._offline(exc)
            await asyncio.sleep(self._watch_failed(failures, error))
            failures += 1


class _Refused(Exception):
    def __init__(self, error: ClientError) -> None:
        self.error = error


def _sync(build: Callable[..., Call]) -> Callable[..., tuple[Any, ClientError | None]]:
    @functools.wraps(build)
    def call(self: SessiondClient, *args: Any, **kw: Any) -> tuple[Any, ClientError | None]:
        return self.execute(build(*args, **kw))

    return call


def _async(build: Callable[..., Call]) -> Callable[..., Any]:
    @functools.wraps(build)
    async def call(self: AsyncSessiondClient, *args: Any, **kw: Any) -> Any:
        return await self.execute(build(*args, **kw))

    return call


for _name, _build in CALLS.items():
    setattr(SessiondClient, _name, _sync(_build))
    setattr(AsyncSessiondClient, _name, _async(_build))
