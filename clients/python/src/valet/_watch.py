"""Server streams (`watch_grants`, `watch_authorization`), for `Client` (an iterator) and
`AsyncClient` (an async iterator).

A watch is returned once the daemon has answered the call, so it is subscribed: every event
from then on reaches it. It ends when closed (or its `with` block is left), at its timeout, or
when the stream ends; a refusal (a bad filter, an agent key naming no user, an unknown flow)
raises the typed error when the watch is opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from valet._closing import AsyncClosing, Closing
from valet.errors import from_rpc_error

T = TypeVar("T")

# How a watch ends without an error: closed by its owner, or its timeout passed.
_ENDED = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


class Watch(Closing, Generic[T]):
    """A stream's events as they happen: iterate; `close()` ends the watch."""

    def __init__(self, stream: Any, parse: Callable[[Any], T]) -> None:
        self._stream = stream
        self._parse = parse
        # Returns once the daemon answered: subscribed, or refused (the call is then done).
        stream.initial_metadata()
        if stream.done() and stream.code() != grpc.StatusCode.OK:
            raise from_rpc_error(stream)

    def __iter__(self) -> Watch[T]:
        return self

    def __next__(self) -> T:
        try:
            m = next(self._stream)
        except grpc.RpcError as e:
            if e.code() in _ENDED:
                raise StopIteration from None
            raise from_rpc_error(e) from None
        return self._parse(m)

    def close(self) -> None:
        self._stream.cancel()


class AsyncWatch(AsyncClosing, Generic[T]):
    """`Watch` for asyncio: `async for`; `close()` ends the watch."""

    def __init__(self, call: Any, parse: Callable[[Any], T]) -> None:
        self._call = call
        self._parse = parse
        self._closed = False

    async def _open(self) -> AsyncWatch[T]:
        try:
            # Raises for a call the daemon refused; returns once it answered.
            await self._call.wait_for_connection()
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return self

    def __aiter__(self) -> AsyncWatch[T]:
        return self

    async def __anext__(self) -> T:
        try:
            m = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if e.code() in _ENDED:
                raise StopAsyncIteration from None
            raise from_rpc_error(e) from None
        except asyncio.CancelledError:
            # The call was cancelled under the reader (`close()`, or the client closed its
            # channel): the watch ends, as the sync one does. The reader's own task being
            # cancelled is not swallowed.
            task = asyncio.current_task()
            if (self._closed or self._call.cancelled()) and (
                task is None or task.cancelling() == 0
            ):
                raise StopAsyncIteration from None
            raise
        if m is grpc.aio.EOF:
            raise StopAsyncIteration
        return self._parse(m)

    async def close(self) -> None:
        self._closed = True
        self._call.cancel()


class OpeningWatch(Generic[T]):
    """What `AsyncClient.watch_*` return: `async with client.watch_grants(...) as events:`, or
    `events = await client.watch_grants(...)` (then `close()` it)."""

    def __init__(self, start: Callable[[], Any], parse: Callable[[Any], T]) -> None:
        self._start = start
        self._parse = parse
        self._watch: AsyncWatch[T] | None = None

    async def _open(self) -> AsyncWatch[T]:
        self._watch = AsyncWatch(self._start(), self._parse)
        return await self._watch._open()

    def __await__(self) -> Generator[Any, None, AsyncWatch[T]]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncWatch[T]:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            await self._watch.close()
