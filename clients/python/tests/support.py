"""Test harness: the real `valet` binary on 127.0.0.1:0, the real OpenID provider peer (node),
and a cookie-jar browser that fills the provider's login and consent forms over HTTP.

The Python twin of tests/it/support/{daemon,idp,browser}.rs: same config shape, same callers,
same way of learning the bound ports. A missing binary or peer fails with install advice.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import queue
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
PEER_DIR = REPO / "tests" / "peers" / "oidc"
FIXTURES = REPO / "tests" / "fixtures"

ADMIN_KEY = "test-admin-key-canary-1"
AGENT_KEY = "test-agent-key-canary-2"
OTHER_AGENT_KEY = "test-agent-key-canary-3"
CANARIES = (ADMIN_KEY, AGENT_KEY, OTHER_AGENT_KEY)

# Provider ids whose callback URLs the peer accepts as redirect URIs.
PROVIDER_IDS = ("idp", "idp2", "oauth", "lg", "adk", "bound")


def secret_of(client: str) -> str:
    """The peer's client secrets (tests/peers/oidc/provider.mjs)."""
    return f"{client}-secret-canary-0123456789"


def valet_bin() -> Path:
    """The daemon binary: VALET_BIN, else the debug build tests/run.sh makes."""
    path = Path(os.environ.get("VALET_BIN") or REPO / "target" / "debug" / "valet")
    if not path.is_file():
        pytest.fail(
            f"the valet binary is missing at {path}: build it with `cargo build` "
            "(./tests/run.sh does) or point VALET_BIN at one",
            pytrace=False,
        )
    return path


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class DaemonOptions:
    flow_ttl_seconds: int = 600
    store: str = 'store = "embedded"'
    # Appended after everything else ([[callers]], [vault], [grpc_tls]...).
    extra_toml: str = ""
    http_listen: str = "127.0.0.1:0"


class Daemon:
    """The real daemon, configured by a TOML file in `workdir`, or with `dev=True` as
    `valet serve --dev` (which prints a one-time admin key, kept in `admin_key`)."""

    def __init__(
        self, workdir: Path, opts: DaemonOptions | None = None, *, dev: bool = False
    ) -> None:
        self.opts = opts or DaemonOptions()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data = workdir / "data"
        self.logs: list[str] = []
        self.dev = dev
        self.admin_key: str | None = None
        self._start()

    def _command(self) -> list[str]:
        if self.dev:
            return [
                "serve",
                "--dev",
                "--data-dir",
                str(self.data),
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                self.opts.http_listen,
            ]
        config = self.workdir / "valet.toml"
        config.write_text(self._config())
        return ["serve", "--config", str(config)]

    def _config(self) -> str:
        o = self.opts
        return f"""data_dir = "{self.data}"
{o.store}
grpc_listen = "127.0.0.1:0"
http_listen = "{o.http_listen}"
shutdown_grace_seconds = 5

[log]
level = "info"

[flows]
ttl_seconds = {o.flow_ttl_seconds}

[provider_http]
# The peers listen on loopback.
allow_private_networks = true

[[callers]]
name = "ops"
role = "admin"
key_sha256 = "{_sha256(ADMIN_KEY)}"
rate_limit = 0

[[callers]]
name = "agent-a"
role = "agent"
key_sha256 = "{_sha256(AGENT_KEY)}"
agents = ["planner", "writer", "research-*"]
rate_limit = 0

[[callers]]
name = "agent-b"
role = "agent"
key_sha256 = "{_sha256(OTHER_AGENT_KEY)}"
agents = ["reviewer"]
rate_limit = 0

{o.extra_toml}
"""

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VALET_")}
        self.proc = subprocess.Popen(
            [str(valet_bin()), *self._command()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain_stdout, args=(lines,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                self.stop()
                pytest.fail(f"valet did not start listening in 30 s; logs:\n{self.log_text()}")
            if line is None:
                self.proc.wait()
                pytest.fail(
                    f"valet exited ({self.proc.returncode}) before listening; "
                    f"logs:\n{self.log_text()}"
                )
            if line.startswith("admin key: "):
                self.admin_key = line.removeprefix("admin key: ")
            if line.startswith("valet listening "):
                parts = dict(p.split("=", 1) for p in line.split()[2:])
                self.grpc_url = f"http://{parts['grpc']}"
                self.http_addr = parts["http"]
                return

    def _drain_stdout(self, lines: queue.Queue[str | None]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.logs.append(line)

    def log_text(self) -> str:
        return "".join(self.logs)

    def callback_url(self, provider_id: str) -> str:
        return f"http://{self.http_addr}/oauth/callback/{provider_id}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        """Stops and starts again on the same data directory and HTTP address."""
        self.stop()
        self.opts.http_listen = self.http_addr
        self._start()


class Idp:
    """panva/oidc-provider under node, from tests/peers/oidc."""

    def __init__(self, redirect_uris: list[str]) -> None:
        if not (PEER_DIR / "node_modules" / "oidc-provider").exists():
            pytest.fail(
                "the OpenID provider peer is not installed: run "
                "`npm ci --prefix tests/peers/oidc` (./tests/run.sh does this) with Node.js >= 20",
                pytrace=False,
            )
        try:
            self.proc = subprocess.Popen(
                ["node", "provider.mjs", json.dumps({"redirect_uris": redirect_uris})],
                cwd=PEER_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError:
            pytest.fail(
                "cannot run `node`: install Node.js >= 20 to run these tests", pytrace=False
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        prefix = "oidc-provider listening "
        if not line.startswith(prefix):
            self.stop()
            pytest.fail(f"unexpected provider output: {line!r}")
        self.issuer = line.removeprefix(prefix)
        # Keep draining: a closed pipe would kill node with EPIPE on its next console line.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()], daemon=True).start()

    def control(self, what: str) -> None:
        with _direct.open(f"{self.issuer}/__test/{what}", timeout=10) as r:
            assert r.status == 200, what

    def stats(self) -> dict[str, Any]:
        with _direct.open(f"{self.issuer}/__test/stats", timeout=10) as r:
            return json.load(r)

    def userinfo_status(self, access_token: str) -> int:
        """GET /me with the token: 200 proves the provider honours it."""
        req = urllib.request.Request(
            f"{self.issuer}/me", headers={"Authorization": f"Bearer {access_token}"}
        )
        return _status(_direct, req)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Loopback only: never through a proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(opener: urllib.request.OpenerDirector, req: urllib.request.Request | str) -> int:
    try:
        with opener.open(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class Page:
    status: int
    headers: Any
    body: str
    url: str


def _attr(html: str, marker: str) -> str | None:
    start = html.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return html[start : html.find('"', start)]


@dataclass
class Browser:
    """Follows redirects by hand with a cookie jar, fills the peer's dev login and consent
    forms, and stops at Valet's callback so a test can inspect or replay it."""

    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
        )

    def send(self, url: str, form: list[tuple[str, str]] | None = None) -> Page:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(urllib.request.Request(url, data=data), timeout=10) as r:
                return Page(r.status, r.headers, r.read().decode(), url)
        except urllib.error.HTTPError as e:
            return Page(e.code, e.headers, e.read().decode(), url)

    def authorize(self, auth_url: str, login: str, approve: bool = True) -> str:
        """Signs in as `login` and approves (or aborts) the consent; returns the callback URL
        the provider redirected to, without visiting it."""
        url, form = auth_url, None
        for _ in range(20):
            page = self.send(url, form)
            form = None
            if 300 <= page.status < 400:
                url = urllib.parse.urljoin(url, page.headers["Location"])
                if "/oauth/callback/" in urllib.parse.urlsplit(url).path:
                    return url
                continue
            assert page.status == 200, f"provider page failed: {page.body}"
            action = _attr(page.body, 'action="')
            assert action is not None, f"no form on the provider page: {page.body}"
            submit = urllib.parse.urljoin(url, action)
            if 'name="login"' in page.body:
                form = [("prompt", "login"), ("login", login), ("password", "any")]
                url = submit
            elif approve:
                form = [("prompt", "consent")]
                url = submit
            else:
                url = f"{submit}/abort"
        raise AssertionError("the provider did not redirect to the callback")

    def consent(self, auth_url: str, login: str) -> None:
        """Authorizes and visits the callback; asserts Valet's success page."""
        page = self.send(self.authorize(auth_url, login))
        assert page.status == 200, f"callback failed: {page.body}"
        assert "Authorization complete" in page.body, page.body


def replace_query(url: str, **changes: str | None) -> str:
    """`url` with query parameters replaced (a value) or removed (None)."""
    parts = urllib.parse.urlsplit(url)
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in changes]
    pairs += [(k, v) for k, v in changes.items() if v is not None]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))


def query_param(url: str, name: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))[name]
