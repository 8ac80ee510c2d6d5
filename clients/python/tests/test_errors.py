"""Typed errors: every `ErrorReason` has its class, and each reason the daemon can be driven to
here is produced by the real daemon and arrives as that class, with its gRPC code (CONFLICT and
INTERNAL, which need a race or a tampered store, are checked on decoded statuses)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

import valet
from valet import errors
from valet.v1 import valet_pb2 as pb

from conftest import LIMITED_KEY, Stack
from support import ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY, Browser, query_param, replace_query

C = grpc.StatusCode


def camel(reason: str) -> str:
    return "".join(part.capitalize() for part in reason.split("_"))


def test_every_error_reason_in_the_proto_has_its_class() -> None:
    reasons = [r for r in pb.ErrorReason.keys() if r != "ERROR_REASON_UNSPECIFIED"]
    assert len(reasons) >= 21, reasons
    for reason in reasons:
        cls = errors.class_for_reason(reason)
        assert cls is not errors.ValetError, f"no class for {reason}"
        assert issubclass(cls, errors.ValetError)
        assert cls.REASON == reason and cls.__name__ == camel(reason)
        assert getattr(errors, cls.__name__) is cls and cls.__name__ in errors.__all__
    assert errors.class_for_reason("SOMETHING_NEWER") is errors.ValetError


class FakeRpcError(grpc.RpcError):
    """What grpc raises, carrying a google.rpc.Status in its trailers."""

    def __init__(self, code: grpc.StatusCode, message: str, *details: object) -> None:
        self._code, self._message = code, message
        status = status_pb2.Status(code=code.value[0], message=message)
        for d in details:
            packed = any_pb2.Any()
            packed.Pack(d)  # type: ignore[arg-type]
            status.details.append(packed)
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_status_details_decode_into_reason_retry_and_field_violations() -> None:
    e = errors.from_rpc_error(
        FakeRpcError(
            C.UNAVAILABLE,
            "the provider is unreachable",
            error_details_pb2.ErrorInfo(reason="PROVIDER_UNAVAILABLE", domain="valet.dev"),
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=2, nanos=5 * 10**8)
            ),
        )
    )
    assert type(e) is errors.ProviderUnavailable
    assert (e.code, e.reason, e.retry_after, e.retryable) == (
        C.UNAVAILABLE,
        "PROVIDER_UNAVAILABLE",
        2.5,
        True,
    )
    bad = errors.from_rpc_error(
        FakeRpcError(
            C.INVALID_ARGUMENT,
            "invalid argument",
            error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="valet.dev"),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="scopes", description="too many"
                    )
                ]
            ),
        )
    )
    assert type(bad) is errors.InvalidArgument and not bad.retryable
    assert bad.violations == (errors.FieldViolation("scopes", "too many"),)
    conflict = errors.from_rpc_error(
        FakeRpcError(
            C.ABORTED, "retry", error_details_pb2.ErrorInfo(reason="CONFLICT", domain="valet.dev")
        )
    )
    assert type(conflict) is errors.Conflict
    # INTERNAL needs a tampered store record; the Rust suite drives the daemon there
    # (tests/it/adversarial.rs), this checks the mapping.
    internal = errors.from_rpc_error(
        FakeRpcError(
            C.INTERNAL, "internal", error_details_pb2.ErrorInfo(reason="INTERNAL", domain="valet.dev")
        )
    )
    assert type(internal) is errors.Internal
    # Another domain's reason is not Valet's; no details at all maps by code.
    foreign = errors.from_rpc_error(
        FakeRpcError(
            C.NOT_FOUND, "x", error_details_pb2.ErrorInfo(reason="NOT_FOUND", domain="other.dev")
        )
    )
    assert type(foreign) is errors.ValetError and foreign.reason is None
    assert (
        type(errors.from_rpc_error(FakeRpcError(C.DEADLINE_EXCEEDED, "late")))
        is errors.DeadlineExceeded
    )


def raises(
    cls: type[errors.ValetError], code: grpc.StatusCode, call: Callable[[], object]
) -> errors.ValetError:
    """Asserts `call` fails with exactly `cls` and `code`, and the message names no canary."""
    with pytest.raises(errors.ValetError) as info:
        call()
    e = info.value
    assert type(e) is cls, f"expected {cls.__name__}, got {e!r}"
    assert e.code == code, repr(e)
    assert e.reason == cls.REASON
    for canary in ("canary", AGENT_KEY, ADMIN_KEY):
        assert canary not in str(e) and canary not in repr(e)
    return e


# Requests the daemon refuses outright.


def test_invalid_argument_names_the_field(agent: valet.Client) -> None:
    e = raises(
        errors.InvalidArgument,
        C.INVALID_ARGUMENT,
        lambda: agent.authenticate("Not A Provider!", user_id="u"),
    )
    assert [v.field for v in e.violations] == ["provider_id"]


def test_not_found_already_exists_and_permission_denied(
    stack: Stack, admin: valet.Client, agent: valet.Client, user: str
) -> None:
    raises(errors.NotFound, C.NOT_FOUND, lambda: admin.get_provider("no-such-provider"))
    raises(errors.AlreadyExists, C.ALREADY_EXISTS, lambda: stack.oidc_provider("idp"))
    raises(
        errors.PermissionDenied,
        C.PERMISSION_DENIED,
        lambda: agent.create_provider(provider_id="mine", kind="oidc"),
    )
    # agent-a may act as planner, writer and research-*, not as reviewer.
    raises(
        errors.PermissionDenied,
        C.PERMISSION_DENIED,
        lambda: agent.authenticate("idp", user_id=user, agent_id="reviewer"),
    )


def test_unauthenticated_and_unreachable_have_no_reason(stack: Stack) -> None:
    """The transport's own statuses carry no reason; each says what to check."""
    with valet.Client(stack.daemon.grpc_url, "not-a-key") as stranger:
        e = raises(errors.Unauthenticated, C.UNAUTHENTICATED, lambda: stranger.list_grants())
    assert "unknown API key" in e.message and "set VALET_KEY" in e.message, e.message
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with valet.Client(f"http://127.0.0.1:{port}", AGENT_KEY, timeout=5) as nowhere:
        e = raises(errors.Unreachable, C.UNAVAILABLE, lambda: nowhere.list_grants())
    assert "is `valet serve` running" in e.message, e.message
    # The daemon's HTTP listener given as its gRPC address.
    with valet.Client(f"http://{stack.daemon.http_addr}", AGENT_KEY, timeout=5) as http:
        with pytest.raises(errors.ValetError) as info:
            http.list_grants()
    assert info.value.code == C.UNIMPLEMENTED, repr(info.value)
    assert "the gRPC address" in info.value.message, info.value.message
    # https:// to a daemon serving plaintext.
    tls = stack.daemon.grpc_url.replace("http://", "https://")
    with valet.Client(tls, AGENT_KEY, timeout=5) as wrong:
        e = raises(errors.Unreachable, C.UNAVAILABLE, lambda: wrong.list_grants())
    assert "use an http:// target" in e.message, e.message


def test_resource_exhausted_past_a_callers_rate_limit(stack: Stack, user: str) -> None:
    with stack.client(LIMITED_KEY) as limited:
        with pytest.raises(errors.ResourceExhausted) as e:
            for _ in range(10):
                limited.list_grants(user_id=user)
    assert e.value.code == C.RESOURCE_EXHAUSTED and "rate limit" in e.value.message


def test_credential_missing_for_a_static_provider_without_a_value(
    admin: valet.Client, agent: valet.Client, user: str
) -> None:
    admin.create_provider(provider_id=f"keyed-{user[-6:]}", kind="http_bearer")
    raises(
        errors.CredentialMissing,
        C.FAILED_PRECONDITION,
        lambda: agent.authenticate(f"keyed-{user[-6:]}", user_id=user),
    )


# Provider failures.


def client_credentials_provider(
    admin: valet.Client, stack: Stack, provider_id: str, secret: str
) -> None:
    admin.create_provider(
        provider_id=provider_id,
        kind="client_credentials",
        client_id="basic-client",
        client_secret=secret,
        token_url=f"{stack.idp.issuer}/token",
    )


def test_provider_rejected_and_provider_unavailable(
    stack: Stack, admin: valet.Client, agent: valet.Client
) -> None:
    client_credentials_provider(admin, stack, "svc-wrong", "wrong-secret-canary")
    e = raises(
        errors.ProviderRejected, C.FAILED_PRECONDITION, lambda: agent.authenticate("svc-wrong")
    )
    assert "invalid_client" in e.message and not e.retryable

    client_credentials_provider(admin, stack, "svc", "basic-client-secret-canary-0123456789")
    stack.idp.control("fail-token?status=503")
    try:
        e = raises(errors.ProviderUnavailable, C.UNAVAILABLE, lambda: agent.authenticate("svc"))
        assert e.retryable
        # A rate-limited provider's own Retry-After reaches the caller as RetryInfo.
        stack.idp.control("fail-token?status=429&retry_after=7")
        e = raises(errors.ProviderUnavailable, C.UNAVAILABLE, lambda: agent.authenticate("svc"))
        assert e.retry_after == 7
    finally:
        stack.idp.control("fail-token?status=0")
    assert agent.authenticate("svc").token


# Consent flows that end without a grant: WaitForCompletion says how.


def start_flow(
    agent: valet.Client, user: str, provider: str = "idp", **kw: object
) -> valet.AuthResult:
    pending = agent.authenticate(provider, user_id=user, **kw)  # type: ignore[arg-type]
    assert pending.status == "pending"
    return pending


def wait_fails(
    agent: valet.Client, pending: valet.AuthResult, cls: type[errors.ValetError]
) -> errors.ValetError:
    e = raises(
        cls,
        C.FAILED_PRECONDITION,
        lambda: agent.wait_for_completion(pending.auth_id or "", timeout=5),
    )
    assert isinstance(e, errors.FlowFailed)
    return e


def test_access_denied_when_the_user_refuses(agent: valet.Client, user: str) -> None:
    pending = start_flow(agent, user)
    states = agent.watch_authorization(pending.auth_id or "", timeout=10)
    assert next(states).status == "pending"
    browser = Browser()
    callback = browser.authorize(pending.auth_url or "", user, approve=False)
    assert query_param(callback, "error") == "access_denied"
    assert browser.send(callback).status == 400
    # Watched, the flow's end is its typed error, as for wait_for_completion.
    with states, pytest.raises(errors.AccessDenied) as denied:
        next(states)
    assert denied.value.reason == "ACCESS_DENIED"
    wait_fails(agent, pending, errors.AccessDenied)
    # A watch opened once it ended: the same error, when it opens.
    with pytest.raises(errors.AccessDenied):
        agent.watch_authorization(pending.auth_id or "")


def test_provider_error_when_the_provider_answers_with_another_error(
    agent: valet.Client, user: str
) -> None:
    pending = start_flow(agent, user)
    browser = Browser()
    callback = browser.authorize(pending.auth_url or "", user)
    failed = replace_query(callback, code=None, error="temporarily_unavailable")
    assert browser.send(failed).status == 400
    wait_fails(agent, pending, errors.ProviderError)


def test_wrong_provider_when_the_callback_lands_elsewhere(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    with stack.client(ADMIN_KEY) as admin:
        if "idp2" not in [p.provider_id for p in admin.list_providers()]:
            stack.oidc_provider("idp2")
    pending = start_flow(agent, user)
    browser = Browser()
    callback = browser.authorize(pending.auth_url or "", user)
    assert (
        browser.send(callback.replace("/oauth/callback/idp?", "/oauth/callback/idp2?")).status
        == 400
    )
    wait_fails(agent, pending, errors.WrongProvider)


def test_issuer_mismatch_when_the_callback_names_another_issuer(
    agent: valet.Client, user: str
) -> None:
    pending = start_flow(agent, user)
    browser = Browser()
    callback = browser.authorize(pending.auth_url or "", user)
    assert browser.send(replace_query(callback, iss="https://evil.example")).status == 400
    wait_fails(agent, pending, errors.IssuerMismatch)


def test_id_token_rejected_when_the_nonce_does_not_match(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    stack.idp.control("tamper-nonce?on=1")
    try:
        pending = start_flow(agent, user)
        browser = Browser()
        assert browser.send(browser.authorize(pending.auth_url or "", user)).status == 400
    finally:
        stack.idp.control("tamper-nonce?on=0")
    e = wait_fails(agent, pending, errors.IdTokenRejected)
    assert "nonce" in e.message.lower()


def test_exchange_failed_when_the_provider_refuses_the_code(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    with stack.client(ADMIN_KEY) as admin:
        admin.create_provider(
            provider_id="oauth",
            kind="oauth2",
            client_id="post-client",
            client_secret="wrong-secret-canary",
            auth_url=f"{stack.idp.issuer}/auth",
            token_url=f"{stack.idp.issuer}/token",
            token_auth_method="client_secret_post",
            default_scopes=["api.read"],
        )
    try:
        pending = start_flow(agent, user, "oauth")
        browser = Browser()
        assert browser.send(browser.authorize(pending.auth_url or "", user)).status == 400
        e = wait_fails(agent, pending, errors.ExchangeFailed)
        assert "invalid_client" in e.message
    finally:
        with stack.client(ADMIN_KEY) as admin:
            admin.delete_provider("oauth")


def test_account_mismatch_when_another_account_consents(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    first = start_flow(agent, user)
    stack.consent(first.auth_url or "", user)
    agent.wait_for_completion(first.auth_id or "", timeout=5)
    again = start_flow(agent, user, force_reauth=True)
    mallory = Browser()
    assert mallory.send(mallory.authorize(again.auth_url or "", "mallory")).status == 400
    e = wait_fails(agent, again, errors.AccountMismatch)
    assert "revoke the grant first" in e.message


def test_user_mismatch_when_the_operators_app_vouches_for_another_user(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    return_url = "http://127.0.0.1:9/app/return?tenant=acme"
    with stack.client(ADMIN_KEY) as admin:
        if "bound" not in [p.provider_id for p in admin.list_providers()]:
            stack.oidc_provider("bound", consent_return_url=return_url)
    pending = start_flow(agent, user, "bound")
    browser = Browser()
    page = browser.send(browser.authorize(pending.auth_url or "", user))
    assert page.status == 303, page.body
    session = query_param(page.headers["Location"], "session")
    with stack.client(OTHER_AGENT_KEY) as app:
        raises(
            errors.UserMismatch,
            C.FAILED_PRECONDITION,
            lambda: app.complete_authorization(session, "someone-else"),
        )
    wait_fails(agent, pending, errors.UserMismatch)


def test_flow_expired_when_the_user_is_too_slow(
    make_stack: Callable[..., Stack], user: str
) -> None:
    s = make_stack(flow_ttl_seconds=1)
    s.oidc_provider("idp")
    with s.client() as agent:
        pending = start_flow(agent, user)
        time.sleep(2.2)
        browser = Browser()
        assert browser.send(browser.authorize(pending.auth_url or "", user)).status in (400, 404)
        wait_fails(agent, pending, errors.FlowExpired)


# Failures of the grant or the store, after a restart on an altered store.


def reference_then_restart(s: Stack, user: str, alter: Callable[[], None]) -> str:
    """A reference for `user`, then `alter` runs while the daemon is stopped."""
    s.oidc_provider("idp")
    with s.client() as agent:
        pending = start_flow(agent, user, handout="reference")
        s.consent(pending.auth_url or "", user)
        ref = agent.wait_for_completion(pending.auth_id or "", timeout=5).reference or ""
    s.daemon.stop()
    alter()
    s.daemon.restart()
    return ref


def test_reauthorization_required_when_the_provider_refuses_the_refresh_token(
    make_stack: Callable[..., Stack], user: str
) -> None:
    s = make_stack()
    store = s.daemon.data / "store.redb"
    s.oidc_provider("idp")
    with s.client() as agent:
        pending = start_flow(agent, user, handout="reference")
        s.consent(pending.auth_url or "", user)
        ref = agent.wait_for_completion(pending.auth_id or "", timeout=5).reference or ""
        # Snapshot the store (as a backup would), then refresh once: the token rotates.
        snapshot = store.read_bytes()
        agent.resolve(ref, min_ttl=86_400)
    # Restoring the backup puts back a refresh token the provider saw used: it refuses it.
    s.daemon.stop()
    store.write_bytes(snapshot)
    s.daemon.restart()
    with s.client() as agent:
        raises(
            errors.ReauthorizationRequired,
            C.FAILED_PRECONDITION,
            lambda: agent.resolve(ref, min_ttl=86_400),
        )
        # Authenticate in the same case starts a new consent instead.
        assert agent.authenticate("idp", user_id=user).status == "pending"


def test_store_unavailable_when_vault_is_down(make_stack: Callable[..., Stack], user: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = make_stack(
        store='store = "vault"',
        extra_toml=(
            f'[vault]\naddress = "{dead}"\nkv_version = 2\nmount = "secret"\n'
            'prefix = "valet/"\ntimeout_seconds = 2\n\n'
            '[vault.auth]\nmethod = "token"\ntoken = "t"\n'
        ),
    )
    with s.client() as agent:
        e = raises(
            errors.StoreUnavailable, C.UNAVAILABLE, lambda: agent.authenticate("idp", user_id=user)
        )
    assert e.retryable
