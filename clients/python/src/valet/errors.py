"""Typed errors: one exception class per `valet.v1.ErrorReason`, all under `ValetError`.

The daemon puts a stable reason in every error status (google.rpc.ErrorInfo, domain
"valet.dev"), and clients switch on it rather than on the message, so each reason is a class to
`except`. Statuses without one (a missing or unknown API key, an unreachable daemon, a deadline)
map by gRPC code. Messages are the daemon's own, which never carry a secret; the client adds none,
only, for those statuses without a reason, a hint at the usual mistake.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "valet.dev"
_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest): which field, and why."""

    field: str
    description: str


class ValetError(Exception):
    """A call to the daemon failed.

    `code` is the gRPC status code, `reason` the `ErrorReason` name from ErrorInfo (None when the
    status had none), `retry_after` the seconds RetryInfo suggests (None: retrying will not help),
    `violations` the fields a BadRequest names.
    """

    REASON: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str | None = None,
        retry_after: float | None = None,
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason if reason is not None else self.REASON
        self.retry_after = retry_after
        self.violations = violations

    @property
    def retryable(self) -> bool:
        """Whether the daemon said a retry may succeed (it sent RetryInfo)."""
        return self.retry_after is not None

    def __str__(self) -> str:
        tag = self.reason or self.code.name
        return f"{self.message} [{tag}]"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )


# Statuses without ErrorInfo: the caller-authentication interceptor and the transport.


class Unauthenticated(ValetError):
    """No API key, an unknown one, or one the daemon cannot parse (UNAUTHENTICATED)."""


class Unreachable(ValetError):
    """The daemon could not be reached (UNAVAILABLE from the transport, not from Valet)."""


class DeadlineExceeded(ValetError):
    """The call's deadline passed before the daemon answered."""


# One class per ErrorReason. Keep in step with proto/valet/v1/valet.proto (a test checks).


class InvalidArgument(ValetError):
    """A request field is invalid; `violations` names it."""

    REASON = "INVALID_ARGUMENT"


class NotFound(ValetError):
    """No such provider, grant, reference or flow (for this caller)."""

    REASON = "NOT_FOUND"


class AlreadyExists(ValetError):
    """A provider with that id exists."""

    REASON = "ALREADY_EXISTS"


class PermissionDenied(ValetError):
    """This caller may not do this (an agent key on an admin call, another agent's grant...)."""

    REASON = "PERMISSION_DENIED"


class FlowFailed(ValetError):
    """A consent flow ended without a grant; the subclass says how. Start a new flow to retry."""


class FlowExpired(FlowFailed):
    """The consent flow expired before the user finished it."""

    REASON = "FLOW_EXPIRED"


class AccessDenied(FlowFailed):
    """The user denied access at the provider."""

    REASON = "ACCESS_DENIED"


class ProviderError(FlowFailed):
    """The provider answered the authorization request with an error."""

    REASON = "PROVIDER_ERROR"


class WrongProvider(FlowFailed):
    """The callback arrived at another provider than the flow was started for."""

    REASON = "WRONG_PROVIDER"


class IssuerMismatch(FlowFailed):
    """The callback's issuer (RFC 9207) is not the provider's."""

    REASON = "ISSUER_MISMATCH"


class IdTokenRejected(FlowFailed):
    """The provider's ID token failed verification."""

    REASON = "ID_TOKEN_REJECTED"


class ExchangeFailed(FlowFailed):
    """Exchanging the authorization code (or storing the new grant) failed."""

    REASON = "EXCHANGE_FAILED"


class AccountMismatch(FlowFailed):
    """The consent came from another provider account than the grant's; nothing was stored."""

    REASON = "ACCOUNT_MISMATCH"


class UserMismatch(FlowFailed):
    """Consent binding: the operator's app vouched for another user; nothing was stored."""

    REASON = "USER_MISMATCH"


class ReauthorizationRequired(ValetError):
    """The provider no longer honours the grant. `authenticate` starts a new consent."""

    REASON = "REAUTHORIZATION_REQUIRED"


class ProviderRejected(ValetError):
    """The provider refused the request (an OAuth error such as invalid_client)."""

    REASON = "PROVIDER_REJECTED"


class ProviderBlocked(ValetError):
    """Valet did not call the provider: its address is private, loopback or link-local and the
    daemon's `[provider_http] allow_private_networks` is off (an operator's setting)."""

    REASON = "PROVIDER_BLOCKED"


class ProviderUnavailable(ValetError):
    """The provider is unreachable or failing; retry after `retry_after` seconds."""

    REASON = "PROVIDER_UNAVAILABLE"


class StoreUnavailable(ValetError):
    """Valet's secret store is unreachable; retry after `retry_after` seconds."""

    REASON = "STORE_UNAVAILABLE"


class Conflict(ValetError):
    """A concurrent change won; retry."""

    REASON = "CONFLICT"


class ResourceExhausted(ValetError):
    """A limit was reached: pending flows (in total, per user) or this caller's rate limit."""

    REASON = "RESOURCE_EXHAUSTED"


class Internal(ValetError):
    """A fault in the daemon; its log has the details."""

    REASON = "INTERNAL"


class CredentialMissing(ValetError):
    """A static-credential provider has no value stored for this user: `put_credential` one."""

    REASON = "CREDENTIAL_MISSING"


def _reason_classes() -> dict[str, type[ValetError]]:
    found: dict[str, type[ValetError]] = {}
    pending: list[type[ValetError]] = [ValetError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.REASON is not None:
            found[cls.REASON] = cls
    return found


_BY_REASON = _reason_classes()
_BY_CODE: dict[grpc.StatusCode, type[ValetError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    # The transport's refusal of a request too large: a value given was too long.
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
}


def class_for_reason(reason: str) -> type[ValetError]:
    """The exception class for an `ErrorReason` name; `ValetError` for one this client predates."""
    return _BY_REASON.get(reason, ValetError)


def _details(trailing: Iterable[Any] | None) -> status_pb2.Status | None:
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed detail must not hide the error itself
                return None
    return None


def _hint(code: grpc.StatusCode, message: str) -> str:
    """What to check, for a status the daemon did not give a reason (the transport's own)."""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return " (pass api_key= or set VALET_KEY)"
    if code == grpc.StatusCode.UNAVAILABLE and "WRONG_VERSION_NUMBER" in message:
        return " (the daemon answered without TLS: use an http:// target, or set [grpc_tls] on it)"
    if code == grpc.StatusCode.UNAVAILABLE and "shutting down" in message:
        return ""  # the daemon said why: a watch to open again
    if code == grpc.StatusCode.UNAVAILABLE:
        return " (is `valet serve` running, and is target= or VALET_SERVER its gRPC address?)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            " (the daemon did not answer within the client's timeout: pass a longer timeout= to"
            " Client or AsyncClient)"
        )
    if code == grpc.StatusCode.OUT_OF_RANGE and "message length too large" in message:
        return " (the request is larger than the daemon accepts: a value given is too long)"
    if code == grpc.StatusCode.UNIMPLEMENTED and "404" in message:
        return (
            " (is target= or VALET_SERVER the gRPC address, grpc_listen? The HTTP listener serves"
            " only callbacks, health and metrics)"
        )
    return ""


def from_rpc_error(error: grpc.RpcError) -> ValetError:
    """The typed error for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    call: Any = error
    code: grpc.StatusCode = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message: str = (call.details() if hasattr(call, "details") else None) or code.name
    trailing = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    reason: str | None = None
    retry_after: float | None = None
    violations: list[FieldViolation] = []
    status = _details(trailing)
    for any_ in status.details if status is not None else ():
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            if info.domain == DOMAIN:
                reason = info.reason
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    cls = class_for_reason(reason) if reason else _BY_CODE.get(code, ValetError)
    if not reason:
        message += _hint(code, message)
    return cls(
        message,
        code=code,
        reason=reason,
        retry_after=retry_after,
        violations=tuple(violations),
    )


__all__ = [
    "DOMAIN",
    "AccessDenied",
    "AccountMismatch",
    "AlreadyExists",
    "Conflict",
    "CredentialMissing",
    "DeadlineExceeded",
    "ExchangeFailed",
    "FieldViolation",
    "FlowExpired",
    "FlowFailed",
    "IdTokenRejected",
    "Internal",
    "InvalidArgument",
    "IssuerMismatch",
    "NotFound",
    "PermissionDenied",
    "ProviderBlocked",
    "ProviderError",
    "ProviderRejected",
    "ProviderUnavailable",
    "ReauthorizationRequired",
    "ResourceExhausted",
    "StoreUnavailable",
    "Unauthenticated",
    "Unreachable",
    "UserMismatch",
    "ValetError",
    "WrongProvider",
    "class_for_reason",
    "from_rpc_error",
]
