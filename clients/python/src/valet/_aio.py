"""The asyncio client (grpc.aio), for agent runtimes that are async (LangGraph, ADK).

A grpc.aio channel belongs to the event loop it was created on. Runtimes differ on loops (ADK's
`Runner.run` starts one per call, tests start one per test), so the channel is opened lazily on
the running loop and a new one is opened when the client is used from another loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from valet import _wire
from valet._client import DEFAULT_TIMEOUT
from valet._closing import AsyncClosing
from valet._config import CHANNEL_OPTIONS, Endpoint, resolve_endpoint
from valet._watch import OpeningWatch
from valet.errors import from_rpc_error
from valet.types import AuthResult, Grant, GrantEvent, Handout, Resolved, RevokeResult
from valet.v1 import valet_pb2 as pb
from valet.v1 import valet_pb2_grpc as pb_grpc

T = TypeVar("T")


class _Connection:
    """One loop's channel and stubs."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.channel = (
            grpc.aio.secure_channel(endpoint.address, endpoint.credentials, options=CHANNEL_OPTIONS)
            if endpoint.credentials is not None
            else grpc.aio.insecure_channel(endpoint.address, options=CHANNEL_OPTIONS)
        )
        self.stubs: dict[str, Any] = {
            "credentials": pb_grpc.CredentialsStub(self.channel),
            "providers": pb_grpc.ProvidersStub(self.channel),
        }


class AsyncClient(AsyncClosing):
    """`Client` for asyncio: the same methods, as coroutines. See `Client` for each one."""

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._endpoint: Endpoint = resolve_endpoint(
            target,
            api_key,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
        )
        self._timeout = timeout
        # Keyed by loop. Not weak: a channel holds its loop, so a weak key never died.
        self._connections: dict[asyncio.AbstractEventLoop, _Connection] = {}

    @property
    def server(self) -> str:
        return self._endpoint.server

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._connections.get(loop)
        if conn is None:
            # A new loop (ADK starts one per `Runner.run`): the channels of loops that have
            # closed are dropped, so a long-lived client holds one per live loop, not one per
            # loop it ever ran on.
            for old in [old for old in self._connections if old.is_closed()]:
                del self._connections[old]
            conn = self._connections[loop] = _Connection(self._endpoint)
        return conn

    async def _run(self, call: _wire.Call[T]) -> T:
        method = getattr(self._connection().stubs[call.service], call.method)
        try:
            answer = await method(
                call.request,
                metadata=_wire.call_metadata(self._endpoint.metadata(), call),
                timeout=call.timeout or self._timeout,
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return call.parse(answer)

    async def authenticate(
        self,
        provider: str,
        scopes: Iterable[str] = (),
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        handout: Handout = "token",
        min_ttl: _wire.Seconds | None = None,
        force_reauth: bool = False,
        single_use: bool = False,
        audience: str | None = None,
        resource: str | None = None,
        subject_token: str | None = None,
        subject_token_type: str | None = None,
        account: str | None = None,
        challenge: str | None = None,
        user_assertion: str | None = None,
    ) -> AuthResult:
        return await self._run(
            _wire.asserted(
                _wire.authenticate(
                    provider,
                    scopes,
                    user_id,
                    agent_id,
                    handout,
                    min_ttl,
                    force_reauth,
                    single_use,
                    audience,
                    resource,
                    subject_token,
                    subject_token_type,
                    account,
                    challenge,
                ),
                user_assertion,
            )
        )

    async def wait_for_completion(
        self, auth_id: str, timeout: float = 600.0, *, status_only: bool = False
    ) -> AuthResult:
        deadline = time.monotonic() + timeout
        left: float | None = timeout
        while True:
            result = await self._run(
                _wire.wait_for_completion(auth_id, left or 1.0, status_only)
            )
            left = _wire.remaining(deadline)
            if result.status == "completed" or left is None:
                return result

    async def resolve(
        self,
        reference: str,
        min_ttl: _wire.Seconds | None = None,
        *,
        target_url: str | None = None,
        user_assertion: str | None = None,
    ) -> Resolved:
        return await self._run(
            _wire.asserted(_wire.resolve(reference, min_ttl, target_url), user_assertion)
        )

    def watch_grants(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> OpeningWatch[GrantEvent]:
        """`async with client.watch_grants(...) as events: async for e in events: ...` (or
        `await` it for the watch)."""
        return OpeningWatch(
            lambda: self._connection().stubs["credentials"].WatchGrants(
                _wire.watch_grants_request(provider, user_id, agent_id),
                metadata=self._endpoint.metadata(),
                timeout=timeout,
            ),
            _wire.grant_event,
        )

    def watch_authorization(
        self, auth_id: str, *, timeout: float | None = None
    ) -> OpeningWatch[AuthResult]:
        return OpeningWatch(
            lambda: self._connection().stubs["credentials"].WatchAuthorization(
                pb.WatchAuthorizationRequest(auth_id=auth_id),
                metadata=self._endpoint.metadata(),
                timeout=timeout,
            ),
            _wire.authorization_event,
        )

    async def revoke(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        reference: str | None = None,
        account: str | None = None,
        user_assertion: str | None = None,
    ) -> RevokeResult:
        return await self._run(
            _wire.asserted(
                _wire.revoke(provider, user_id, agent_id, reference, account), user_assertion
            )
        )

    async def list_grants(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        account: str | None = None,
        user_assertion: str | None = None,
    ) -> list[Grant]:
        grants: list[Grant] = []
        token = ""
        while True:
            page, token = await self._run(
                _wire.asserted(
                    _wire.list_grants(provider, user_id, agent_id, token, account),
                    user_assertion,
                )
            )
            grants.extend(page)
            if not token:
                return grants

    async def put_credential(
        self,
        provider: str,
        user_id: str,
        value: str,
        *,
        agent_id: str | None = None,
        username: str | None = None,
        account: str | None = None,
        user_assertion: str | None = None,
    ) -> None:
        await self._run(
            _wire.asserted(
                _wire.put_credential(provider, user_id, value, agent_id, username, account),
                user_assertion,
            )
        )

    async def complete_authorization(self, session: str, user_id: str) -> str:
        return await self._run(_wire.complete_authorization(session, user_id))

    async def create_provider(
        self, provider: pb.Provider | None = None, **fields: Any
    ) -> pb.Provider:
        return await self._run(_wire.create_provider(_wire.provider_message(provider, fields)))

    async def get_provider(self, provider_id: str) -> pb.Provider:
        return await self._run(_wire.get_provider(provider_id))

    async def list_providers(self) -> list[pb.Provider]:
        return await self._run(_wire.list_providers())

    async def update_provider(
        self, provider: pb.Provider | None = None, **fields: Any
    ) -> pb.Provider:
        return await self._run(_wire.update_provider(_wire.provider_message(provider, fields)))

    async def delete_provider(
        self, provider_id: str, *, revoke_at_provider: bool = False
    ) -> pb.DeleteProviderResponse:
        return await self._run(_wire.delete_provider(provider_id, revoke_at_provider))

    async def close(self) -> None:
        """Closes the running loop's channel (channels of other loops close with their loop)."""
        conn = self._connections.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.channel.close()

    def __repr__(self) -> str:
        key = "<redacted>" if self._endpoint.key else None
        return f"AsyncClient(target={self.server!r}, api_key={key!r})"
