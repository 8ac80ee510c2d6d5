"""The blocking client: one gRPC channel, the caller's API key on every call.

Requests and answers are built and parsed in `_wire`, shared with `AsyncClient`; this module
only runs them. Errors come out as the typed exceptions of `valet.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TypeVar

import grpc

from valet import _wire
from valet._closing import Closing
from valet._config import CHANNEL_OPTIONS, Endpoint, resolve_endpoint
from valet._watch import Watch
from valet.errors import ValetError, from_rpc_error
from valet.types import AuthResult, Grant, GrantEvent, Handout, Resolved, RevokeResult
from valet.v1 import valet_pb2 as pb
from valet.v1 import valet_pb2_grpc as pb_grpc

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


def _closed(e: ValueError) -> Exception:
    """grpc's "Cannot invoke RPC on closed channel!" (or "...: Channel closed!", for a stream) as
    Valet's error; any other as it was."""
    if "closed channel" in str(e).lower() or "channel closed" in str(e).lower():
        return ValetError(
            "this Client is closed: make a new Client", code=grpc.StatusCode.CANCELLED
        )
    return e


class Client(Closing):
    """A connection to a Valet daemon.

    `target` is the daemon's URL (`http://host:port`, or `https://` for TLS) and `api_key` the
    caller's key; each falls back to `VALET_SERVER` / `VALET_KEY` (and TLS files to
    `VALET_TLS_CA`, `VALET_TLS_CERT`, `VALET_TLS_KEY`), as for the `valet` CLI.
    `root_certificates`, `certificate_chain` and `private_key` are PEM bytes. `timeout` is the
    deadline in seconds of each call except `wait_for_completion`'s long polls.

    Thread-safe; share one per process. Use as a context manager or call `close()`.
    """

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
        e = self._endpoint
        self._channel = (
            grpc.secure_channel(e.address, e.credentials, options=CHANNEL_OPTIONS)
            if e.credentials is not None
            else grpc.insecure_channel(e.address, options=CHANNEL_OPTIONS)
        )
        self._stubs: dict[str, Any] = {
            "credentials": pb_grpc.CredentialsStub(self._channel),
            "providers": pb_grpc.ProvidersStub(self._channel),
        }

    @property
    def server(self) -> str:
        """The daemon's URL."""
        return self._endpoint.server

    def _run(self, call: _wire.Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        try:
            answer = method(
                call.request,
                metadata=_wire.call_metadata(self._endpoint.metadata(), call),
                timeout=call.timeout or self._timeout,
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        except ValueError as e:
            raise _closed(e) from None
        return call.parse(answer)

    # Credentials: what agents call.

    def authenticate(
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
        """A token (or with `handout="reference"` a reference) for `user_id` at `provider`, or
        a pending consent flow to show the user.

        `scopes` empty means the provider's defaults. `agent_id` set: the grant belongs to that
        agent only; None: to every agent of the user. `min_ttl` (seconds) is the life the token
        must have left. `account` names one of the user's several accounts at the provider
        (e.g. "work"), each its own grant; None: the default account. `challenge`: the
        `WWW-Authenticate` header of an API's (an MCP server's) 401/403 answer; the scopes its
        `insufficient_scope` challenge names are asked for too (step-up consent). While a flow
        is pending, the same request returns the same flow.
        """
        return self._run(
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

    def wait_for_completion(
        self, auth_id: str, timeout: float = 600.0, *, status_only: bool = False
    ) -> AuthResult:
        """Waits up to `timeout` seconds (by default as long as a flow lives by default, ten
        minutes) for the flow `auth_id` to complete.

        Returns the completed result as soon as the consent lands, or the still-pending flow at
        the timeout. A flow that failed raises its `FlowFailed` subclass. With `status_only`
        the completed result carries no token or reference: for an app that only waits for the
        user's consent while the agent asks `authenticate` itself (a UI resuming a graph).
        """
        deadline = time.monotonic() + timeout
        left: float | None = timeout
        while True:
            result = self._run(_wire.wait_for_completion(auth_id, left or 1.0, status_only))
            left = _wire.remaining(deadline)
            if result.status == "completed" or left is None:
                return result

    def resolve(
        self,
        reference: str,
        min_ttl: _wire.Seconds | None = None,
        *,
        target_url: str | None = None,
        user_assertion: str | None = None,
    ) -> Resolved:
        """A fresh access token for the grant `reference` names, and the credential to apply.
        Only the caller the reference was issued to may resolve it. `target_url`: the URL the
        token is about to be sent to; where the provider lists `egress_hosts` (MCP providers:
        their server's host), a host outside them is refused (`PermissionDenied`), so an agent
        talked into it cannot ship the token elsewhere."""
        return self._run(
            _wire.asserted(_wire.resolve(reference, min_ttl, target_url), user_assertion)
        )

    def watch_grants(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Watch[GrantEvent]:
        """Lifecycle events (created, refreshed, needs_reauth, revoked, refresh_failed,
        reauth_due) of the grants this caller may see, from now on, until the watch is closed
        or `timeout` seconds pass (None: no end). Filters as in `list_grants`; an agent key must
        name the user. Use as `with client.watch_grants(...) as events: for e in events: ...`."""
        try:
            stream = self._stubs["credentials"].WatchGrants(
                _wire.watch_grants_request(provider, user_id, agent_id),
                metadata=self._endpoint.metadata(),
                timeout=timeout,
            )
            return Watch(stream, _wire.grant_event)
        except ValueError as e:
            raise _closed(e) from None

    def watch_authorization(
        self, auth_id: str, *, timeout: float | None = None
    ) -> Watch[AuthResult]:
        """The flow `auth_id`'s state now (pending), then its end: completed, as
        `wait_for_completion` answers, or a failure raised as its typed error (`FlowExpired`,
        `AccessDenied`, ...). Only the caller that started the flow may watch it."""
        try:
            stream = self._stubs["credentials"].WatchAuthorization(
                pb.WatchAuthorizationRequest(auth_id=auth_id),
                metadata=self._endpoint.metadata(),
                timeout=timeout,
            )
            return Watch(stream, _wire.authorization_event)
        except ValueError as e:
            raise _closed(e) from None

    def revoke(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        reference: str | None = None,
        account: str | None = None,
        user_assertion: str | None = None,
    ) -> RevokeResult:
        """Removes a grant (and revokes its tokens at the provider where it can), or with
        `reference` that one reference."""
        return self._run(
            _wire.asserted(
                _wire.revoke(provider, user_id, agent_id, reference, account), user_assertion
            )
        )

    def list_grants(
        self,
        provider: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        *,
        account: str | None = None,
        user_assertion: str | None = None,
    ) -> list[Grant]:
        """Grant metadata (never tokens), optionally for one provider, user and/or agent; every
        page of the daemon's listing. A provider that is not configured raises NotFound."""
        grants: list[Grant] = []
        token = ""
        while True:
            page, token = self._run(
                _wire.asserted(
                    _wire.list_grants(provider, user_id, agent_id, token, account),
                    user_assertion,
                )
            )
            grants.extend(page)
            if not token:
                return grants

    def put_credential(
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
        """Stores a static credential (api_key, http_basic, http_bearer providers) for a user,
        optionally for one agent (`agent_id`) or one of the user's accounts (`account`)."""
        self._run(
            _wire.asserted(
                _wire.put_credential(provider, user_id, value, agent_id, username, account),
                user_assertion,
            )
        )

    def complete_authorization(self, session: str, user_id: str) -> str:
        """Consent binding: vouches that `user_id` gave the consent `session` names. Returns
        the provider id."""
        return self._run(_wire.complete_authorization(session, user_id))

    # Providers: what operators call (admin key).

    def create_provider(self, provider: pb.Provider | None = None, **fields: Any) -> pb.Provider:
        """Creates a provider from a `Provider` message and/or its fields as keywords (enum
        fields take short words: `kind="oidc"`). Returns it as stored (no secrets)."""
        return self._run(_wire.create_provider(_wire.provider_message(provider, fields)))

    def get_provider(self, provider_id: str) -> pb.Provider:
        return self._run(_wire.get_provider(provider_id))

    def list_providers(self) -> list[pb.Provider]:
        return self._run(_wire.list_providers())

    def update_provider(self, provider: pb.Provider | None = None, **fields: Any) -> pb.Provider:
        """Replaces a provider's whole configuration (unlike `valet provider update`, which changes
        only the flags given): start from `get_provider`, change fields, pass it back. An empty
        client_secret keeps the stored one, while the token endpoint stays on its host."""
        return self._run(_wire.update_provider(_wire.provider_message(provider, fields)))

    def delete_provider(
        self, provider_id: str, *, revoke_at_provider: bool = False
    ) -> pb.DeleteProviderResponse:
        return self._run(_wire.delete_provider(provider_id, revoke_at_provider))

    # Lifecycle.

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        key = "<redacted>" if self._endpoint.key else None
        return f"Client(target={self.server!r}, api_key={key!r})"
