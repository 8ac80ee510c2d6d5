"""Tokens, references, applied credentials and API keys never show in repr() or str()."""

from __future__ import annotations

import pytest

import valet

from conftest import Stack
from support import AGENT_KEY


def shown(obj: object) -> str:
    return repr(obj) + "\n" + str(obj) + "\n" + f"{obj}" + "\n" + repr([obj])


def test_real_tokens_and_references_are_redacted(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    pending = agent.authenticate("idp", user_id=user, handout="reference")
    assert pending.auth_url and pending.auth_url in shown(pending), "a pending flow is shown whole"
    stack.consent(pending.auth_url, user)
    ref = agent.wait_for_completion(pending.auth_id or "", timeout=10)
    token = agent.authenticate("idp", user_id=user)
    resolved = agent.resolve(ref.reference or "")
    secrets = [ref.reference, token.token, resolved.token, resolved.credential.value]
    assert all(s and len(s) > 8 for s in secrets)
    for obj in (ref, token, resolved, resolved.credential):
        text = shown(obj)
        assert "<redacted>" in text, text
        for secret in secrets:
            assert secret not in text, f"{type(obj).__name__} shows a secret: {text}"
    # What is not secret stays visible for debugging.
    assert "completed" in shown(token) and "Authorization" in shown(resolved.credential)


async def test_clients_never_show_their_key(stack: Stack) -> None:
    sync = valet.Client(stack.daemon.grpc_url, AGENT_KEY)
    aio = valet.AsyncClient(stack.daemon.grpc_url, AGENT_KEY)
    try:
        for client in (sync, aio):
            text = shown(client)
            assert AGENT_KEY not in text and "<redacted>" in text and stack.daemon.grpc_url in text
    finally:
        sync.close()
        await aio.close()


def test_errors_carry_no_secret_from_the_request(agent: valet.Client, user: str) -> None:
    secret = "subject-token-canary-7f3a"
    with pytest.raises(valet.ValetError) as e:
        agent.authenticate("no-such-provider", user_id=user, subject_token=secret)
    assert secret not in shown(e.value) and "NOT_FOUND" in str(e.value)
