"""The examples run as their README says: against `valet serve --dev` with its admin key, no LLM
key, printing the consent URL and finishing once the user consented."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from conftest import Stack
from support import PROVIDER_IDS, REPO, Daemon, DaemonOptions, Idp

EXAMPLES = REPO / "clients" / "python" / "examples"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    daemon = Daemon(tmp_path_factory.mktemp("dev"), DaemonOptions(), dev=True)
    idp = Idp([daemon.callback_url(p) for p in PROVIDER_IDS])
    try:
        assert daemon.admin_key, "serve --dev prints a one-time admin key"
        s = Stack(daemon, idp, admin_key=daemon.admin_key)
        s.oidc_provider("idp")
        yield s
    finally:
        idp.stop()
        daemon.stop()


def run_example(dev: Stack, script: str, user: str) -> str:
    env = {
        **os.environ,
        "VALET_SERVER": dev.daemon.grpc_url,
        "VALET_KEY": dev.daemon.admin_key or "",
    }
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--provider", "idp", "--user", user],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    try:
        while True:
            line = lines.get(timeout=60)
            if line is None:
                break
            output.append(line)
            url = line.strip()
            if url.startswith(f"{dev.idp.issuer}/auth?"):
                dev.consent(url, user)
        assert proc.wait(timeout=30) == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
    return "".join(output)


def test_the_langgraph_example_finishes_after_consent(dev: Stack, user: str) -> None:
    out = run_example(dev, "langgraph_agent.py", user)
    assert "Open this URL in a browser" in out and "Waiting for consent" in out
    assert "got a token for idp" in out and "['Authorization']" in out, out


def test_the_adk_example_finishes_after_consent(dev: Stack, user: str) -> None:
    out = run_example(dev, "adk_agent.py", user)
    assert "Open this URL in a browser" in out, out
    assert "the tool got a token for idp" in out and "vref_" in out, out
