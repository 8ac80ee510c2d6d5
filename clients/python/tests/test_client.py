"""The client against the real daemon and the real OpenID provider: handouts, the consent round
trip, resolve, revoke, grants, provider admin calls, configuration and TLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

import valet
from valet import errors
from valet.v1 import valet_pb2 as pb

from conftest import Stack
from support import ADMIN_KEY, AGENT_KEY, FIXTURES, OTHER_AGENT_KEY


def consented(stack: Stack, client: valet.Client, user: str, **kwargs: object) -> valet.AuthResult:
    """Authenticate → consent in the browser → WaitForCompletion, checking each step."""
    pending = client.authenticate("idp", user_id=user, **kwargs)  # type: ignore[arg-type]
    assert pending.status == "pending" and pending.needs_auth
    stack.consent(pending.auth_url or "", user)
    assert pending.auth_id
    done = client.wait_for_completion(pending.auth_id, timeout=10)
    assert done.status == "completed", done
    return done


def test_token_handout_pends_until_consent_then_hands_out_a_live_token(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    pending = agent.authenticate("idp", ["openid", "email"], user)
    assert pending.status == "pending"
    assert pending.token is None and pending.reference is None
    assert (pending.auth_url or "").startswith(f"{stack.idp.issuer}/auth?")
    assert pending.auth_id and pending.expires_at and pending.expires_at > time.time()
    # While pending, the same request returns the same flow (a resumed node re-asks).
    again = agent.authenticate("idp", ["openid", "email"], user)
    assert (again.auth_id, again.auth_url) == (pending.auth_id, pending.auth_url)

    stack.consent(pending.auth_url or "", user)
    done = agent.wait_for_completion(pending.auth_id, timeout=10)
    assert done.status == "completed" and not done.needs_auth
    assert done.token and done.token_type and done.reference is None
    assert {"openid", "email"} <= set(done.scopes) and done.missing_scopes == ()
    assert done.expires_at and done.expires_at > time.time()
    assert stack.idp.userinfo_status(done.token) == 200

    cached = agent.authenticate("idp", ["openid", "email"], user)
    assert cached.status == "completed" and cached.token == done.token


def test_an_apis_scope_challenge_asks_for_its_scopes_too(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    pending = agent.authenticate(
        "idp",
        user_id=user,
        challenge='Bearer error="insufficient_scope", scope="profile"',
    )
    assert pending.status == "pending"
    scope = parse_qs(urlsplit(pending.auth_url or "").query)["scope"][0].split()
    assert {"openid", "email", "profile"} <= set(scope), scope


def test_watch_grants_streams_a_grants_life_without_tokens(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    # Subscribed once returned: the consent below cannot be missed.
    with agent.watch_grants("idp", user_id=user, timeout=30) as events:
        done = consented(stack, agent, user)
        agent.revoke("idp", user)
        seen = []
        for event in events:
            seen.append(event)
            if event.kind == "revoked":
                break
    assert [e.kind for e in seen] == ["created", "revoked"], seen
    assert all((e.provider_id, e.user_id, e.agent_id) == ("idp", user, "") for e in seen)
    assert all(e.at > 0 and (done.token or "-") not in repr(e) for e in seen)
    # Refused when opened: an agent key must name the user, as for list_grants.
    with pytest.raises(errors.InvalidArgument, match="user_id"):
        agent.watch_grants("idp")
    # A watch whose timeout passes just ends.
    with agent.watch_grants("idp", user_id=user, timeout=0.5) as quiet:
        assert list(quiet) == []


def test_watch_authorization_shows_the_flow_then_its_token(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    pending = agent.authenticate("idp", user_id=user)
    with agent.watch_authorization(pending.auth_id or "", timeout=30) as states:
        first = next(states)
        assert first.status == "pending" and first.auth_url == pending.auth_url
        stack.consent(pending.auth_url or "", user)
        done = next(states)
        assert done.status == "completed" and done.token
        assert list(states) == [], "the stream ends with the flow"
    with pytest.raises(errors.NotFound, match="call Authenticate again"):
        agent.watch_authorization("no-such-flow")


async def test_async_watch_grants_sees_a_revoke(stack: Stack, user: str) -> None:
    async with stack.async_client() as client:
        watch = await client.watch_grants("idp", user_id=user, timeout=30)
        async with watch:
            with stack.client() as sync:
                consented(stack, sync, user)
                sync.revoke("idp", user)
            kinds = []
            async for event in watch:
                kinds.append(event.kind)
                if event.kind == "revoked":
                    break
        assert kinds == ["created", "revoked"]
        with pytest.raises(errors.InvalidArgument):
            await client.watch_grants()
        # A flow's states: pending first.
        pending = await client.authenticate("idp", user_id=user)
        async with await client.watch_authorization(pending.auth_id or "", timeout=5) as states:
            first = await states.__anext__()
            assert first.status == "pending" and first.auth_id == pending.auth_id
        with pytest.raises(errors.NotFound):
            await client.watch_authorization("no-such-flow")


async def test_an_async_watch_opens_in_async_with_and_ends_when_closed(
    stack: Stack, user: str
) -> None:
    """`async with client.watch_grants(...)` needs no `await`, and closing a watch (or the
    client) from another task ends the reader's loop, as the sync watch's does."""
    async with stack.async_client() as client:
        async with client.watch_grants("idp", user_id=user, timeout=30) as events:

            async def read() -> list[str]:
                return [e.kind async for e in events]

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.2)
            await events.close()
            assert await asyncio.wait_for(reader, 5) == []
        other = await client.watch_grants("idp", user_id=user, timeout=30)
        reader = asyncio.create_task(anext(aiter(other), None))
        await asyncio.sleep(0.2)
        await client.close()
        assert await asyncio.wait_for(reader, 5) is None
    # A reader whose own task is cancelled is cancelled, not ended quietly.
    async with stack.async_client() as client:
        watch = await client.watch_grants("idp", user_id=user, timeout=30)
        reader = asyncio.create_task(anext(aiter(watch), None))
        await asyncio.sleep(0.2)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await watch.close()


def test_an_async_client_keeps_a_channel_per_live_loop_only(stack: Stack, user: str) -> None:
    """ADK starts an event loop per `Runner.run`: a long-lived client must not keep a channel
    (and through it the loop) for every loop it ever ran on."""
    client = stack.async_client()
    for _ in range(20):
        assert asyncio.run(client.list_grants(user_id=user)) == []
    assert len(client._connections) <= 1


def test_a_closed_client_and_a_request_too_large_say_so(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match="larger than the daemon accepts") as big:
        agent.put_credential("idp", user, "x" * 100_000)
    assert "xxxx" not in str(big.value)
    closed = stack.client()
    closed.close()
    with pytest.raises(errors.ValetError, match="this Client is closed"):
        closed.list_grants(user_id=user)
    with pytest.raises(errors.ValetError, match="this Client is closed"):
        closed.watch_grants("idp", user_id=user)


def test_wait_for_completion_returns_the_pending_flow_at_its_timeout(
    agent: valet.Client, user: str
) -> None:
    pending = agent.authenticate("idp", user_id=user)
    started = time.monotonic()
    still = agent.wait_for_completion(pending.auth_id or "", timeout=1)
    waited = time.monotonic() - started
    assert still.status == "pending" and still.auth_id == pending.auth_id
    assert 0.9 <= waited < 5, waited


async def test_async_client_runs_the_same_round_trip(stack: Stack, user: str) -> None:
    async with stack.async_client() as client:
        pending = await client.authenticate("idp", user_id=user, handout="reference")
        assert pending.status == "pending"
        stack.consent(pending.auth_url or "", user)
        done = await client.wait_for_completion(pending.auth_id or "", timeout=10)
        assert done.status == "completed" and (done.reference or "").startswith("vref_")
        resolved = await client.resolve(done.reference or "")
        assert stack.idp.userinfo_status(resolved.token) == 200
        grants = await client.list_grants("idp", user)
        assert [g.user_id for g in grants] == [user]


def test_reference_handout_resolves_to_a_live_token_and_its_credential(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    done = consented(stack, agent, user, handout="reference")
    assert done.token is None
    assert (done.reference or "").startswith("vref_")
    assert done.expires_at and done.expires_at > time.time()

    resolved = agent.resolve(done.reference or "", min_ttl=60)
    assert stack.idp.userinfo_status(resolved.token) == 200
    assert resolved.expires_at and resolved.expires_at > time.time() + 60
    c = resolved.credential
    assert (c.location, c.name, c.value) == ("header", "Authorization", f"Bearer {resolved.token}")
    headers, params = resolved.apply({"Accept": "application/json"})
    assert headers == {"Accept": "application/json", "Authorization": f"Bearer {resolved.token}"}
    assert params == {}
    # References are bound to the key that got them.
    with pytest.raises(errors.PermissionDenied):
        with valet.Client(stack.daemon.grpc_url, OTHER_AGENT_KEY) as other:
            other.resolve(done.reference or "")


def test_a_single_use_reference_resolves_once(stack: Stack, agent: valet.Client, user: str) -> None:
    consented(stack, agent, user)
    ref = agent.authenticate("idp", user_id=user, handout="reference", single_use=True)
    agent.resolve(ref.reference or "")
    with pytest.raises(errors.PermissionDenied):
        agent.resolve(ref.reference or "")


def test_applied_credentials_go_where_their_location_says() -> None:
    query = valet.AppliedCredential(location="query", name="api_key", value="k-1")
    assert query.apply({"A": "b"}) == ({"A": "b"}, {"api_key": "k-1"})
    cookie = valet.AppliedCredential(location="cookie", name="sid", value="k-2")
    assert cookie.apply({"Cookie": "theme=dark"})[0] == {"Cookie": "theme=dark; sid=k-2"}
    header = valet.AppliedCredential(location="header", name="X-API-Key", value="k-3")
    headers: dict[str, str] = {}
    header.apply(headers)
    assert headers == {"X-API-Key": "k-3"}, "applied in place"


def test_revoking_a_grant_revokes_it_at_the_provider_and_asks_for_consent_again(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    token = consented(stack, agent, user).token or ""
    [grant] = agent.list_grants("idp", user)
    assert (grant.status, grant.kind, grant.agent_id) == ("active", "oidc", "")
    assert grant.has_refresh_token and grant.subject == user

    revoked = agent.revoke("idp", user)
    assert revoked == valet.RevokeResult(revoked=True, provider_revocation="revoked")
    assert agent.list_grants("idp", user) == []
    with pytest.raises(errors.NotFound, match="no provider 'ipd'"):
        agent.list_grants("ipd", user)
    assert stack.idp.userinfo_status(token) == 401
    assert agent.authenticate("idp", user_id=user).status == "pending"
    nothing = agent.revoke("idp", user)
    assert not nothing.revoked


def test_revoking_one_reference_leaves_the_grant(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    ref = consented(stack, agent, user, handout="reference").reference or ""
    assert agent.revoke(reference=ref).revoked
    # A revoked reference is refused like an unknown one (no oracle for which references exist).
    with pytest.raises(errors.PermissionDenied):
        agent.resolve(ref)
    assert agent.authenticate("idp", user_id=user).status == "completed"
    with pytest.raises(ValueError):
        agent.revoke("idp", reference=ref)
    with pytest.raises(ValueError, match="reference="):
        agent.revoke()


def test_an_agent_scoped_grant_is_separate_from_the_user_wide_one(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    consented(stack, agent, user, agent_id="planner")
    assert agent.authenticate("idp", user_id=user, agent_id="planner").status == "completed"
    assert agent.authenticate("idp", user_id=user).status == "pending"
    [grant] = agent.list_grants("idp", user)
    assert grant.agent_id == "planner"


def test_provider_admin_calls_round_trip_without_returning_secrets(
    stack: Stack, admin: valet.Client
) -> None:
    created = admin.create_provider(
        provider_id="oauth",
        kind="oauth2",
        client_id="post-client",
        client_secret="post-client-secret-canary-0123456789",
        auth_url=f"{stack.idp.issuer}/auth",
        token_url=f"{stack.idp.issuer}/token",
        token_auth_method="client_secret_post",
        default_scopes=["api.read"],
        extra_auth_params={"prompt": "consent"},
    )
    try:
        assert created.kind == pb.PROVIDER_KIND_OAUTH2
        assert created.token_auth_method == pb.TOKEN_AUTH_METHOD_CLIENT_SECRET_POST
        assert created.has_client_secret and created.client_secret == ""
        assert created.redirect_uri == stack.daemon.callback_url("oauth")
        assert admin.get_provider("oauth").token_url == f"{stack.idp.issuer}/token"
        assert "oauth" in [p.provider_id for p in admin.list_providers()]
        updated = admin.update_provider(created, name="Renamed", default_scopes=["api.write"])
        assert (updated.name, list(updated.default_scopes)) == ("Renamed", ["api.write"])
        assert updated.has_client_secret, "an empty client_secret keeps the stored one"
    finally:
        admin.delete_provider("oauth")
    with pytest.raises(errors.NotFound):
        admin.get_provider("oauth")
    # An oidc provider as get_provider shows it (endpoints from discovery), sent back.
    idp = admin.get_provider("idp")
    again = admin.update_provider(idp, name=idp.name)
    assert (again.auth_url, again.token_url) == (idp.auth_url, idp.token_url)
    # A kind the API has no word for: refused before any call, with the words it has.
    with pytest.raises(ValueError, match=r"kind='oidcx': expected one of .*oidc.*api_key"):
        admin.create_provider(provider_id="typo", kind="oidcx")


def test_static_credentials_are_stored_then_resolved_where_the_provider_says(
    stack: Stack, admin: valet.Client, agent: valet.Client, user: str
) -> None:
    admin.create_provider(
        provider_id=f"weather-{user[-6:]}",
        kind="api_key",
        credential_location="query",
        credential_name="appid",
        egress_hosts=["api.weather.example"],
    )
    provider = f"weather-{user[-6:]}"
    with pytest.raises(TypeError, match="'location' is not a provider field.*credential_location"):
        admin.create_provider(provider_id="x", kind="api_key", location="query")
    with pytest.raises(errors.CredentialMissing):
        agent.authenticate(provider, user_id=user)
    agent.put_credential(provider, user, "weather-key-canary-5")
    ref = agent.authenticate(provider, user_id=user, handout="reference").reference or ""
    resolved = agent.resolve(ref, target_url="https://api.weather.example/v1/now")
    assert resolved.credential.apply()[1] == {"appid": "weather-key-canary-5"}
    # Not for a host the provider does not send its credential to.
    with pytest.raises(errors.PermissionDenied, match="egress_hosts") as denied:
        agent.resolve(ref, target_url="https://collector.attacker.example/")
    assert "canary" not in str(denied.value)
    # One of the user's other accounts has its own value, listed and revoked by its label.
    with pytest.raises(errors.CredentialMissing, match="account 'work'"):
        agent.authenticate(provider, user_id=user, account="work")
    agent.put_credential(provider, user, "weather-work-canary-6", account="work")
    work = agent.authenticate(provider, user_id=user, account="work")
    assert work.token == "weather-work-canary-6"
    listed = agent.list_grants(provider, user, account="work")
    assert [(g.account, g.has_stored_value) for g in listed] == [("work", True)]
    assert agent.revoke(provider, user, account="work").revoked
    assert [g.account for g in agent.list_grants(provider, user)] == [""]
    with pytest.raises(ValueError, match="either one reference or a grant"):
        agent.revoke(reference=ref, account="work")


def test_server_and_key_come_from_the_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, user: str
) -> None:
    monkeypatch.setenv("VALET_SERVER", stack.daemon.grpc_url)
    monkeypatch.setenv("VALET_KEY", AGENT_KEY)
    with valet.Client() as client:
        assert client.server == stack.daemon.grpc_url
        assert client.list_grants(user_id=user) == []
    monkeypatch.delenv("VALET_KEY")
    with valet.Client() as anonymous, pytest.raises(errors.Unauthenticated) as e:
        anonymous.list_grants(user_id=user)
    assert e.value.reason is None and e.value.code.name == "UNAUTHENTICATED"
    monkeypatch.setenv("VALET_KEY", "no-such-key")
    with valet.Client() as stranger, pytest.raises(errors.Unauthenticated):
        stranger.list_grants(user_id=user)
    # Arguments win over the environment.
    with valet.Client(api_key=ADMIN_KEY) as admin:
        assert "idp" in [p.provider_id for p in admin.list_providers()]


def test_configuration_mistakes_are_clear_and_never_echo_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VALET_SERVER", raising=False)
    with valet.Client(api_key="k") as c:
        assert c.server == "http://127.0.0.1:50051", "the CLI's default"
        # The user passed where the scopes go: refused before any call, naming user_id=.
        with pytest.raises(TypeError, match="user_id="):
            c.authenticate("weather", "alice")
    for bad in ("127.0.0.1:50051", "ftp://x:1", "http://x:1/path", "http://x:port"):
        with pytest.raises(ValueError, match="URL"):
            valet.Client(bad)
    # The key passed where the server goes (`Client(key)`): not echoed, and named.
    with pytest.raises(ValueError, match="api_key=") as e:
        valet.Client("valet_key-canary-7")
    assert "canary" not in str(e.value)
    with pytest.raises(ValueError) as e:
        valet.Client("http://127.0.0.1:1", "secret-key-canary-9\n")
    assert "secret-key-canary-9" not in str(e.value)
    for bad in ("http://user:pw-canary-8@127.0.0.1:1", "ftp://user:pw-canary-8@x/path"):
        with pytest.raises(ValueError, match="user name or password") as e:
            valet.Client(bad)
        assert "canary" not in str(e.value)
    with pytest.raises(ValueError, match="https"):
        valet.Client("http://127.0.0.1:1", root_certificates=b"pem")
    monkeypatch.setenv("VALET_TLS_CERT", "/x.pem")
    with pytest.raises(ValueError, match="VALET_TLS_KEY"):
        valet.Client("https://127.0.0.1:1")


def test_tls_with_the_daemon_ca_and_mtls_from_the_environment(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    meshed = (
        '[[callers]]\nname = "meshed"\nrole = "agent"\nkey_sha256 = "' + "ef" * 32 + '"\n'
        'tls_identity = "spiffe://valet.test/sidecar"\n\n'
        f'[grpc_tls]\ncert_file = "{FIXTURES}/tls-server.pem"\n'
        f'key_file = "{FIXTURES}/tls-server.key"\nclient_ca_file = "{FIXTURES}/tls-ca.pem"\n'
    )
    s = make_stack(extra_toml=meshed)
    server = s.daemon.grpc_url.replace("http://", "https://")
    ca = (FIXTURES / "tls-ca.pem").read_bytes()
    with valet.Client(server, AGENT_KEY, root_certificates=ca) as client:
        assert client.list_grants(user_id="alice") == []
    # The sidecar's certificate is the `meshed` caller: no key needed.
    monkeypatch.setenv("VALET_SERVER", server)
    monkeypatch.setenv("VALET_TLS_CA", str(FIXTURES / "tls-ca.pem"))
    monkeypatch.setenv("VALET_TLS_CERT", str(FIXTURES / "tls-client-sidecar.pem"))
    monkeypatch.setenv("VALET_TLS_KEY", str(FIXTURES / "tls-client-sidecar.key"))
    monkeypatch.delenv("VALET_KEY", raising=False)
    with valet.Client() as sidecar:
        assert sidecar.list_grants(user_id="alice") == []
    # Plaintext to a TLS listener does not get through.
    for name in ("VALET_TLS_CA", "VALET_TLS_CERT", "VALET_TLS_KEY"):
        monkeypatch.delenv(name)
    with valet.Client(s.daemon.grpc_url, AGENT_KEY, timeout=5) as plain:
        with pytest.raises(errors.ValetError):
            plain.list_grants(user_id="alice")


def test_user_assertions_are_sent_for_callers_that_must_prove_the_user(
    make_stack: Callable[..., Stack],
) -> None:
    """A caller with require_user_assertion gets nothing for a user without a JWT from the
    operator's identity provider naming that user; `user_assertion=` sends one. The identity
    provider is a loopback JWKS endpoint serving tests/fixtures/test-jwks.json; the assertions
    are signed with the matching fixture key."""
    import hashlib
    import http.server
    import threading

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    jwks = (FIXTURES / "test-jwks.json").read_bytes()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key_name = "test-asserted-agent-key-canary-5"
    issuer = "https://login.operator.test"
    asserted_caller = (
        f'[[callers]]\nname = "asserted"\nrole = "agent"\n'
        f'key_sha256 = "{hashlib.sha256(key_name.encode()).hexdigest()}"\nagents = ["*"]\n'
        "require_user_assertion = true\n\n"
        f'[user_assertions]\nissuer = "{issuer}"\naudience = "valet"\n'
        f'jwks_url = "http://127.0.0.1:{server.server_address[1]}/jwks"\n'
    )
    try:
        s = make_stack(extra_toml=asserted_caller)
        s.oidc_provider("idp")
        signing = RSAKey.import_key((FIXTURES / "test-rsa-2048.pem").read_bytes())

        def assertion(sub: str) -> str:
            now = int(time.time())
            claims = {"iss": issuer, "sub": sub, "aud": "valet", "iat": now, "exp": now + 300}
            return jwt.encode({"alg": "RS256", "kid": "rsa-1"}, claims, signing)

        with s.client(key_name) as client:
            with pytest.raises(errors.PermissionDenied) as missing:
                client.authenticate("idp", user_id="alice")
            assert "x-valet-user-assertion" in str(missing.value)
            with pytest.raises(errors.PermissionDenied):
                client.authenticate("idp", user_id="alice", user_assertion=assertion("mallory"))
            ok = client.authenticate("idp", user_id="alice", user_assertion=assertion("alice"))
            assert ok.status == "pending" and ok.auth_url
            assert client.list_grants(user_id="alice", user_assertion=assertion("alice")) == []
            with pytest.raises(ValueError):
                client.authenticate("idp", user_id="alice", user_assertion="a\nb")
    finally:
        server.shutdown()
