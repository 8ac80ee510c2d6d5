"""Fixtures: one shared daemon + OpenID provider for the session (tests keep apart by using their
own user ids), and a factory for tests that need a daemon configured their own way."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import valet

from support import (
    ADMIN_KEY,
    AGENT_KEY,
    PROVIDER_IDS,
    Browser,
    Daemon,
    DaemonOptions,
    Idp,
    secret_of,
)

# A caller limited to 1 request per second (bursts of 2), for RESOURCE_EXHAUSTED.
LIMITED_KEY = "test-limited-agent-key-canary-6"
LIMITED_CALLER = f"""
[[callers]]
name = "limited"
role = "agent"
key_sha256 = "{hashlib.sha256(LIMITED_KEY.encode()).hexdigest()}"
rate_limit = 1
"""


@dataclass
class Stack:
    """A daemon, the provider peer that knows its redirect URIs, and helpers."""

    daemon: Daemon
    idp: Idp
    admin_key: str = ADMIN_KEY

    def client(self, key: str | None = AGENT_KEY) -> valet.Client:
        return valet.Client(self.daemon.grpc_url, key)

    def async_client(self, key: str | None = AGENT_KEY) -> valet.AsyncClient:
        return valet.AsyncClient(self.daemon.grpc_url, key)

    def oidc_provider(
        self, provider_id: str = "idp", client: str = "basic-client", **fields: object
    ) -> valet.Provider:
        """An `oidc` provider at the peer (client_secret_basic), with its revocation endpoint."""
        spec: dict[str, object] = {
            "provider_id": provider_id,
            "kind": "oidc",
            "client_id": client,
            "client_secret": secret_of(client),
            "issuer": self.idp.issuer,
            "revocation_url": f"{self.idp.issuer}/token/revocation",
            "default_scopes": ["openid", "email"],
        }
        spec.update(fields)
        with self.client(self.admin_key) as admin:
            return admin.create_provider(**spec)

    def stored_key(self, provider_id: str, user: str, value: str) -> str:
        """An `api_key` provider (`X-API-Key` header, sent only to api.weather.example) with
        `user`'s key stored: its id."""
        with self.client(self.admin_key) as admin:
            admin.create_provider(
                provider_id=provider_id,
                kind="api_key",
                credential_location="header",
                credential_name="X-API-Key",
                egress_hosts=["api.weather.example"],
            )
        with self.client() as agent:
            agent.put_credential(provider_id, user, value)
        return provider_id

    def consent(self, auth_url: str, login: str) -> None:
        """A user (`login` at the provider) signs in and approves, in a fresh browser."""
        Browser().consent(auth_url, login)

    def stop(self) -> None:
        self.idp.stop()
        self.daemon.stop()


def start_stack(workdir: Path, opts: DaemonOptions | None = None) -> Stack:
    daemon = Daemon(workdir, opts)
    try:
        idp = Idp([daemon.callback_url(p) for p in PROVIDER_IDS])
    except BaseException:
        daemon.stop()
        raise
    return Stack(daemon, idp)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("valet"), DaemonOptions(extra_toml=LIMITED_CALLER))
    try:
        s.oidc_provider("idp")
        yield s
    finally:
        s.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Starts stacks with their own daemon options; stops them after the test."""
    started: list[Stack] = []

    def make(**opts: object) -> Stack:
        s = start_stack(tmp_path / f"valet{len(started)}", DaemonOptions(**opts))  # type: ignore[arg-type]
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def user() -> str:
    """A user id no other test uses, so tests share the session's daemon without meeting."""
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agent(stack: Stack) -> Iterator[valet.Client]:
    with stack.client(AGENT_KEY) as c:
        yield c


@pytest.fixture
def admin(stack: Stack) -> Iterator[valet.Client]:
    with stack.client(ADMIN_KEY) as c:
        yield c
