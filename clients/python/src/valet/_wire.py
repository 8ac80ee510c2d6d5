"""Wire ⇄ Python for every RPC, shared by the sync and async clients.

Each operation is a `Call`: which stub method, the request message, and how to turn the answer
into the client's types. `Client` and `AsyncClient` only execute calls, so the two can never
disagree on a field, a default or an enum spelling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from valet.errors import class_for_reason
from valet.types import (
    AppliedCredential,
    AuthResult,
    Grant,
    GrantEvent,
    Handout,
    Resolved,
    RevokeResult,
)
from valet.v1 import valet_pb2 as pb

T = TypeVar("T")
Seconds = int | float | timedelta


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary RPC: `service.method(request)`, its answer mapped by `parse`. `timeout`
    overrides the client's default deadline (long polls need more)."""

    service: Literal["credentials", "providers"]
    method: str
    # Hidden from repr: requests carry secrets (subject tokens, client secrets, references).
    request: Message = field(repr=False)
    parse: Callable[[Any], T] = field(repr=False)
    timeout: float | None = None
    # A JWT from the operator's identity provider naming the request's user, for callers the
    # daemon configures with require_user_assertion. Never printed.
    user_assertion: str | None = field(default=None, repr=False)


USER_ASSERTION = "x-valet-user-assertion"


def asserted(call: Call[T], user_assertion: str | None) -> Call[T]:
    """`call` carrying `user_assertion` (unchanged without one)."""
    if user_assertion is None:
        return call
    if not user_assertion or not user_assertion.isascii() or not user_assertion.isprintable():
        raise ValueError("user_assertion must be a JWT (printable ASCII)")
    return replace(call, user_assertion=user_assertion)


def call_metadata(base: tuple[tuple[str, str], ...], call: Call[Any]) -> tuple[tuple[str, str], ...]:
    """The connection's metadata plus the call's user assertion, if any."""
    if call.user_assertion is None:
        return base
    return (*base, (USER_ASSERTION, call.user_assertion))


def seconds(value: Seconds | None, what: str) -> int:
    """A non-negative whole number of seconds (proto uint32), rounding up."""
    if value is None:
        return 0
    s = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if s < 0 or not math.isfinite(s):
        raise ValueError(f"{what} must be a non-negative number of seconds")
    return math.ceil(s)


def _short(name: str, prefix: str) -> str:
    """`PROVIDER_KIND_OIDC` → `oidc`."""
    return name.removeprefix(prefix).lower()


def _expiry(unix: int) -> int | None:
    """0 on the wire means "no expiry"; None says so in Python."""
    return unix or None


# Credentials


def _handout(handout: Handout) -> int:
    if handout == "token":
        return pb.HANDOUT_TOKEN
    if handout == "reference":
        return pb.HANDOUT_REFERENCE
    raise ValueError(f'handout must be "token" or "reference", not {handout!r}')


def auth_result(resp: pb.AuthenticateResponse) -> AuthResult:
    which = resp.WhichOneof("result")
    if which == "token":
        t = resp.token
        return AuthResult(
            status="completed",
            token=t.access_token,
            token_type=t.token_type or None,
            header=t.header or None,
            expires_at=_expiry(t.expires_at),
            scopes=tuple(t.scopes),
            missing_scopes=tuple(t.missing_scopes),
            metadata=dict(t.metadata),
        )
    if which == "reference":
        r = resp.reference
        return AuthResult(
            status="completed", reference=r.reference, expires_at=_expiry(r.expires_at)
        )
    if which == "completed":
        # WaitForCompletion with status_only: the consent landed; nothing was handed out.
        return AuthResult(status="completed")
    if which == "pending":
        p = resp.pending
        return AuthResult(
            status="pending",
            auth_url=p.auth_url,
            auth_id=p.auth_id,
            expires_at=_expiry(p.expires_at),
            user_code=p.user_code or None,
            verification_uri=p.verification_uri or None,
        )
    raise ValueError("the daemon answered Authenticate with no result")


def authenticate(
    provider: str,
    scopes: Iterable[str],
    user_id: str | None,
    agent_id: str | None,
    handout: Handout,
    min_ttl: Seconds | None,
    force_reauth: bool,
    single_use: bool,
    audience: str | None,
    resource: str | None,
    subject_token: str | None,
    subject_token_type: str | None,
    account: str | None = None,
    challenge: str | None = None,
) -> Call[AuthResult]:
    if isinstance(scopes, str):
        # `authenticate("github", "alice")`: the second argument is the scopes.
        raise TypeError(
            "scopes must be a list of strings, not one string "
            "(the user goes in user_id=, e.g. authenticate(provider, user_id='alice'))"
        )
    request = pb.AuthenticateRequest(
        provider_id=provider,
        scopes=list(scopes),
        user_id=user_id or "",
        agent_id=agent_id or "",
        handout=_handout(handout),  # type: ignore[arg-type]
        min_ttl_seconds=seconds(min_ttl, "min_ttl"),
        force_reauth=force_reauth,
        single_use=single_use,
        audience=audience or "",
        resource=resource or "",
        subject_token=subject_token or "",
        subject_token_type=subject_token_type or "",
        account=account or "",
        challenge=challenge or "",
    )
    return Call("credentials", "Authenticate", request, auth_result)


# The daemon answers `pending` a tenth before the call's deadline; leave it that room.
def _poll_deadline(wait_seconds: int) -> float:
    return wait_seconds / 0.9 + 5.0


def remaining(deadline: float) -> float | None:
    """Seconds left until the `time.monotonic()` deadline of a wait; None once it is (about)
    reached, so the caller returns the last answer instead of polling again."""
    left = deadline - time.monotonic()
    return left if left >= 1.0 else None


def wait_for_completion(
    auth_id: str, wait_seconds: float, status_only: bool = False
) -> Call[AuthResult]:
    """One long poll of at most `wait_seconds` (the daemon also caps it)."""
    # The daemon caps a wait at flows.wait_max_seconds (at most 3600); longer waits poll again.
    whole = min(max(1, math.ceil(wait_seconds)), 3600)
    request = pb.WaitForCompletionRequest(
        auth_id=auth_id, timeout_seconds=whole, status_only=status_only
    )
    return Call(
        "credentials", "WaitForCompletion", request, auth_result, timeout=_poll_deadline(whole)
    )


def _resolved(resp: pb.ResolveResponse) -> Resolved:
    t, c = resp.token, resp.credential
    return Resolved(
        token=t.access_token,
        credential=AppliedCredential(location=c.location, name=c.name, value=c.value),
        token_type=t.token_type,
        expires_at=_expiry(t.expires_at),
        scopes=tuple(t.scopes),
        missing_scopes=tuple(t.missing_scopes),
        metadata=dict(t.metadata),
    )


def resolve(
    reference: str, min_ttl: Seconds | None, target_url: str | None = None
) -> Call[Resolved]:
    request = pb.ResolveRequest(
        reference=reference,
        min_ttl_seconds=seconds(min_ttl, "min_ttl"),
        target_url=target_url or "",
    )
    return Call("credentials", "Resolve", request, _resolved)


def watch_grants_request(
    provider: str | None, user_id: str | None, agent_id: str | None
) -> pb.WatchGrantsRequest:
    return pb.WatchGrantsRequest(
        provider_id=provider or "", user_id=user_id or "", agent_id=agent_id or ""
    )


def grant_event(m: pb.GrantEvent) -> GrantEvent:
    return GrantEvent(
        kind=_short(pb.GrantEventKind.Name(m.kind), "GRANT_EVENT_KIND_"),
        provider_id=m.provider_id,
        user_id=m.user_id,
        agent_id=m.agent_id,
        at=m.at,
        missed=m.missed,
    )


def authorization_event(m: pb.AuthorizationEvent) -> AuthResult:
    """A flow's state (pending, or completed as `wait_for_completion` answers); a failed flow
    raises its typed error (`FlowExpired`, `AccessDenied`, ...)."""
    which = m.WhichOneof("event")
    if which == "pending":
        return auth_result(pb.AuthenticateResponse(pending=m.pending))
    if which == "completed":
        return auth_result(m.completed)
    reason = pb.ErrorReason.Name(m.failed.reason)
    internal = reason == "INTERNAL"
    code = grpc.StatusCode.INTERNAL if internal else grpc.StatusCode.FAILED_PRECONDITION
    raise class_for_reason(reason)(m.failed.message, code=code, reason=reason)


def _revoked(resp: pb.RevokeResponse) -> RevokeResult:
    name = pb.ProviderRevocation.Name(resp.provider_revocation)
    return RevokeResult(
        revoked=resp.revoked,
        provider_revocation=_short(name, "PROVIDER_REVOCATION_"),
        provider_error=resp.provider_error,
    )


def revoke(
    provider: str | None,
    user_id: str | None,
    agent_id: str | None,
    reference: str | None,
    account: str | None = None,
) -> Call[RevokeResult]:
    if reference and (provider or user_id or agent_id or account):
        raise ValueError("revoke either one reference or a grant (provider, user, agent, account)")
    if not reference and not provider:
        raise ValueError(
            "revoke needs a grant's provider (and user_id), or reference= for one reference"
        )
    request = pb.RevokeRequest(
        provider_id=provider or "",
        user_id=user_id or "",
        agent_id=agent_id or "",
        reference=reference or "",
        account=account or "",
    )
    return Call("credentials", "Revoke", request, _revoked)


def _grant(g: pb.Grant) -> Grant:
    return Grant(
        provider_id=g.provider_id,
        user_id=g.user_id,
        agent_id=g.agent_id,
        scopes=tuple(g.scopes),
        subject=g.subject,
        created_at=g.created_at,
        updated_at=g.updated_at,
        status=_short(pb.GrantStatus.Name(g.status), "GRANT_STATUS_"),
        has_refresh_token=g.has_refresh_token,
        metadata=dict(g.metadata),
        declined_scopes=tuple(g.declined_scopes),
        kind=_short(pb.ProviderKind.Name(g.kind), "PROVIDER_KIND_"),
        issuer=g.issuer,
        has_stored_value=g.has_stored_value,
        account=g.account,
        email=g.email,
    )


def list_grants(
    provider: str | None,
    user_id: str | None,
    agent_id: str | None,
    page_token: str,
    account: str | None = None,
) -> Call[tuple[list[Grant], str]]:
    """One page (the largest the daemon serves); the clients follow `next_page_token`."""
    request = pb.ListGrantsRequest(
        provider_id=provider or "",
        user_id=user_id or "",
        agent_id=agent_id or "",
        account=account or "",
        page_size=1000,
        page_token=page_token,
    )
    return Call(
        "credentials",
        "ListGrants",
        request,
        lambda r: ([_grant(g) for g in r.grants], r.next_page_token),
    )


def put_credential(
    provider: str,
    user_id: str,
    value: str,
    agent_id: str | None,
    username: str | None,
    account: str | None,
) -> Call[None]:
    request = pb.PutCredentialRequest(
        provider_id=provider,
        user_id=user_id,
        agent_id=agent_id or "",
        value=value,
        username=username or "",
        account=account or "",
    )
    return Call("credentials", "PutCredential", request, lambda _: None)


def complete_authorization(session: str, user_id: str) -> Call[str]:
    request = pb.CompleteAuthorizationRequest(session=session, user_id=user_id)
    return Call("credentials", "CompleteAuthorization", request, lambda r: r.provider_id)


# Providers (admin). These speak the generated `Provider` message, so every field the proto
# grows is there without a client change; enum fields also take short words ("oidc").

_ENUM_FIELDS: Mapping[str, tuple[Any, str]] = {
    "kind": (pb.ProviderKind, "PROVIDER_KIND_"),
    "token_auth_method": (pb.TokenAuthMethod, "TOKEN_AUTH_METHOD_"),
    "handout_policy": (pb.HandoutPolicy, "HANDOUT_POLICY_"),
    "credential_location": (pb.CredentialLocation, "CREDENTIAL_LOCATION_"),
    "consent_flow": (pb.ConsentFlow, "CONSENT_FLOW_"),
}


def provider_message(provider: pb.Provider | None, fields: Mapping[str, Any]) -> pb.Provider:
    """A `Provider` from a message and/or keyword fields (the fields win)."""
    message = pb.Provider()
    if provider is not None:
        message.CopyFrom(provider)
    for name, value in fields.items():
        field = pb.Provider.DESCRIPTOR.fields_by_name.get(name)
        if field is None:
            known = ", ".join(sorted(pb.Provider.DESCRIPTOR.fields_by_name))
            raise TypeError(f"{name!r} is not a provider field; the fields are: {known}")
        if name in _ENUM_FIELDS and isinstance(value, str):
            enum, prefix = _ENUM_FIELDS[name]
            wanted = prefix + value.upper().removeprefix(prefix).replace("-", "_")
            if wanted not in enum.keys():
                words = ", ".join(
                    _short(n, prefix) for n in enum.keys() if not n.endswith("_UNSPECIFIED")
                )
                raise ValueError(f"{name}={value!r}: expected one of {words}")
            value = enum.Value(wanted)
        if name in ("extra_auth_params", "profile_vars"):
            getattr(message, name).clear()
            getattr(message, name).update(value)
        elif hasattr(getattr(message, name), "extend"):  # a repeated field
            if isinstance(value, str):
                raise TypeError(f"{name} must be a list of strings, not one string")
            del getattr(message, name)[:]
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def create_provider(provider: pb.Provider) -> Call[pb.Provider]:
    request = pb.CreateProviderRequest(provider=provider)
    return Call("providers", "CreateProvider", request, lambda r: r)


def get_provider(provider_id: str) -> Call[pb.Provider]:
    request = pb.GetProviderRequest(provider_id=provider_id)
    return Call("providers", "GetProvider", request, lambda r: r)


def list_providers() -> Call[list[pb.Provider]]:
    return Call(
        "providers", "ListProviders", pb.ListProvidersRequest(), lambda r: list(r.providers)
    )


def update_provider(provider: pb.Provider) -> Call[pb.Provider]:
    request = pb.UpdateProviderRequest(provider=provider)
    return Call("providers", "UpdateProvider", request, lambda r: r)


def delete_provider(provider_id: str, revoke_at_provider: bool) -> Call[pb.DeleteProviderResponse]:
    request = pb.DeleteProviderRequest(
        provider_id=provider_id, revoke_at_provider=revoke_at_provider
    )
    return Call("providers", "DeleteProvider", request, lambda r: r)
