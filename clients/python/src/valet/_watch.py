"""`watch_grants` streams, for `Client` (an iterator) and `AsyncClient` (an async iterator).

A watch is returned once the daemon has answered the call, so it is subscribed: every grant
event from then on reaches it. It ends when closed (or its `with` block is left), at its
timeout, or when the daemon stops; a refusal (a bad filter, an agent key naming no user)
raises the typed error when the watch is opened.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from valet import _wire
from valet.errors import from_rpc_error
from valet.types import GrantEvent

# How a watch ends without an error: closed by its owner, or its timeout passed.
_ENDED = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


class GrantWatch:
    """Grant lifecycle events as they happen: iterate; `close()` ends the watch."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        # Returns once the daemon answered: subscribed, or refused (the call is then done).
        stream.initial_metadata()
        if stream.done() and stream.code() != grpc.StatusCode.OK:
            raise from_rpc_error(stream)

    def __iter__(self) -> GrantWatch:
        return self

    def __next__(self) -> GrantEvent:
        try:
            return _wire.grant_event(next(self._stream))
        except grpc.RpcError as e:
            if e.code() in _ENDED:
                raise StopIteration from None
            raise from_rpc_error(e) from None

    def close(self) -> None:
        self._stream.cancel()

    def __enter__(self) -> GrantWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGrantWatch:
    """`GrantWatch` for asyncio: `async for`; `close()` ends the watch."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def _open(self) -> AsyncGrantWatch:
        try:
            # Raises for a call the daemon refused; returns once it answered.
            await self._call.wait_for_connection()
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return self

    def __aiter__(self) -> AsyncGrantWatch:
        return self

    async def __anext__(self) -> GrantEvent:
        try:
            m = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if e.code() in _ENDED:
                raise StopAsyncIteration from None
            raise from_rpc_error(e) from None
        if m is grpc.aio.EOF:
            raise StopAsyncIteration
        return _wire.grant_event(m)

    def close(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> AsyncGrantWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
