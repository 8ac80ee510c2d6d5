"""Google ADK 2.13 with Runner + InMemorySessionService and a scripted model (no LLM key): the
tool's consent round trip through `adk_request_credential`, and only a reference in state."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from google.adk.agents import LlmAgent
from google.adk.auth.auth_credential import AuthCredential
from google.adk.events.event import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

import valet
from valet import adk

from conftest import Stack

TOOL = "fetch_profile"


class ScriptedModel(BaseLlm):
    """Calls the tool first; once the tool's answer is in, says what it returned."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1] if llm_request.contents else None
        answers = [
            p.function_response
            for p in (last.parts or [] if last else [])
            if p.function_response and p.function_response.name == TOOL
        ]
        if (
            answers
            and isinstance(answers[-1].response, dict)
            and "userinfo" in answers[-1].response
        ):
            text = f"userinfo answered {answers[-1].response['userinfo']}"
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))
            return
        call = types.FunctionCall(name=TOOL, args={})
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(function_call=call)])
        )


def runner_for(stack: Stack, seen_tokens: list[str]) -> tuple[Runner, InMemorySessionService]:
    async def fetch_profile(credential: AuthCredential) -> dict[str, Any]:
        """Fetches the user's profile from the identity provider."""
        assert credential.http is not None and credential.http.scheme == "bearer"
        token = credential.http.credentials.token or ""
        seen_tokens.append(token)
        return {"userinfo": stack.idp.userinfo_status(token)}

    adk.register(stack.async_client())
    agent = LlmAgent(
        name="assistant",
        model=ScriptedModel(),
        instruction="Use the tool.",
        tools=[adk.valet_tool(fetch_profile, provider="idp", scopes=["openid", "email"])],
    )
    sessions = InMemorySessionService()
    return Runner(app_name="valet-test", agent=agent, session_service=sessions), sessions


async def run(runner: Runner, user: str, session_id: str, message: types.Content) -> list[Event]:
    return [
        e async for e in runner.run_async(user_id=user, session_id=session_id, new_message=message)
    ]


def final_text(events: list[Event]) -> str:
    return "".join(
        p.text or "" for e in events if e.content for p in e.content.parts or [] if p.text
    )


async def test_a_tool_gets_consent_through_adk_request_credential_then_a_live_token(
    stack: Stack, user: str
) -> None:
    tokens: list[str] = []
    runner, sessions = runner_for(stack, tokens)
    session = await sessions.create_session(app_name="valet-test", user_id=user)
    ask = types.Content(role="user", parts=[types.Part(text="Who am I?")])

    events = await run(runner, user, session.id, ask)
    [request] = [r for e in events for r in adk.consent_requests(e)]
    assert request.auth_url.startswith(f"{stack.idp.issuer}/auth?"), request
    assert tokens == [], "the tool did not run without a credential"

    stack.consent(request.auth_url, user)
    # The app may wait on Valet's flow before answering the function call.
    assert request.auth_id
    with stack.client() as client:
        # Only waiting: nothing handed out that the app would throw away.
        done = client.wait_for_completion(request.auth_id, timeout=5, status_only=True)
        assert (done.status, done.token, done.reference) == ("completed", None, None)

    events = await run(runner, user, session.id, request.response())
    assert final_text(events) == "userinfo answered 200"
    assert len(tokens) == 1

    # Session state holds the reference under a user: key, and no token anywhere.
    session = await sessions.get_session(app_name="valet-test", user_id=user, session_id=session.id)
    assert session is not None
    valet_keys = {k: v for k, v in session.state.items() if k.startswith("user:valet:")}
    assert len(valet_keys) == 1 and next(iter(valet_keys.values())).startswith("vref_"), (
        session.state
    )
    stored = json.dumps(session.state, default=str) + json.dumps(
        [e.model_dump(mode="json") for e in session.events], default=str
    )
    assert tokens[0] not in stored

    # Another session of the same user: the reference resolves, no consent.
    other = await sessions.create_session(app_name="valet-test", user_id=user)
    events = await run(runner, user, other.id, ask)
    assert not [r for e in events for r in adk.consent_requests(e)]
    assert final_text(events) == "userinfo answered 200"


async def test_a_dead_reference_is_dropped_and_consent_asked_again(stack: Stack, user: str) -> None:
    tokens: list[str] = []
    runner, sessions = runner_for(stack, tokens)
    session = await sessions.create_session(app_name="valet-test", user_id=user)
    ask = types.Content(role="user", parts=[types.Part(text="Who am I?")])
    [request] = [
        r for e in await run(runner, user, session.id, ask) for r in adk.consent_requests(e)
    ]
    stack.consent(request.auth_url, user)
    assert (
        final_text(await run(runner, user, session.id, request.response()))
        == "userinfo answered 200"
    )

    with stack.client() as client:
        assert client.revoke("idp", user).revoked  # the grant and its references are gone
    events = await run(runner, user, session.id, ask)
    [again] = [r for e in events for r in adk.consent_requests(e)]
    assert again.auth_id != request.auth_id


class FakeToolContext:
    """The two things the provider reads from ADK's context."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.state: dict[str, Any] = {}


async def test_the_provider_hands_out_tokens_references_or_a_consent_url(
    stack: Stack, user: str
) -> None:
    provider = adk.ValetAuthProvider(stack.async_client())
    context = FakeToolContext(user)
    scheme = adk.auth_config("idp", ["openid"], handout="token")

    pending = await provider.get_auth_credential(scheme, context)  # type: ignore[arg-type]
    assert pending.oauth2 is not None and pending.oauth2.access_token is None
    auth_url, auth_id = pending.oauth2.auth_uri or "", pending.oauth2.state or ""
    assert auth_url.startswith(f"{stack.idp.issuer}/auth?") and auth_id
    stack.consent(auth_url, user)
    await provider.client.wait_for_completion(auth_id, timeout=5)

    token = await provider.get_auth_credential(scheme, context)  # type: ignore[arg-type]
    assert token.http is not None and token.http.credentials.token
    assert stack.idp.userinfo_status(token.http.credentials.token) == 200
    assert context.state == {}, "a token handout keeps nothing in state"

    by_reference = adk.auth_config("idp", ["openid"])
    first = await provider.get_auth_credential(by_reference, context)  # type: ignore[arg-type]
    [(key, ref)] = context.state.items()
    assert key.startswith("user:valet:idp:") and ref.startswith("vref_")
    again = await provider.get_auth_credential(by_reference, context)  # type: ignore[arg-type]
    assert first.http and again.http
    assert again.http.credentials.token == first.http.credentials.token
    assert context.state == {key: ref}, "the kept reference was resolved, not replaced"
    await provider.client.close()


def test_applied_credentials_map_to_adk_credentials() -> None:
    bearer = adk.as_auth_credential(
        valet.AppliedCredential("header", "Authorization", "Bearer t-1")
    )
    assert bearer.http is not None and (bearer.http.scheme, bearer.http.credentials.token) == (
        "bearer",
        "t-1",
    )
    header = adk.as_auth_credential(valet.AppliedCredential("header", "X-API-Key", "k-1"))
    assert header.http is not None and header.http.additional_headers == {"X-API-Key": "k-1"}
    query = adk.as_auth_credential(valet.AppliedCredential("query", "appid", "k-2"))
    assert query.api_key == "k-2"


def test_a_token_goes_in_the_header_its_provider_takes() -> None:
    """A token handout names the header when the provider takes the token as it is in its own
    (Shopify); otherwise it is a bearer token. A result without a token says why."""
    bearer = valet.AuthResult(status="completed", token="t-1")
    assert bearer.authorization() == ("Authorization", "Bearer t-1")
    shopify = valet.AuthResult(status="completed", token="t-2", header="X-Shopify-Access-Token")
    assert shopify.authorization() == ("X-Shopify-Access-Token", "t-2")
    name, value = shopify.authorization()
    credential = adk.as_auth_credential(valet.AppliedCredential("header", name, value))
    assert credential.http is not None and credential.http.additional_headers == {
        "X-Shopify-Access-Token": "t-2"
    }
    assert "t-2" not in repr(shopify)
    with pytest.raises(ValueError, match="no token"):
        valet.AuthResult(status="completed", reference="vref_x").authorization()
    stored = valet.AuthResult(status="completed", token="user:pw", token_type="http_basic")
    with pytest.raises(ValueError, match="resolve") as refused:
        stored.authorization()
    assert "user:pw" not in str(refused.value)


async def test_a_static_key_goes_where_its_provider_says_and_only_to_its_hosts(
    stack: Stack, user: str
) -> None:
    """A stored API key reaches the tool in its own header whether handed out as a token or a
    reference (never as a bearer token), and a reference is resolved only for a `target_url`
    on the provider's `egress_hosts`."""
    provider = stack.stored_key(f"weather-adk-{user[-6:]}", user, "adk-weather-canary")
    valet_provider = adk.ValetAuthProvider(stack.async_client())
    for handout in ("token", "reference"):
        context = FakeToolContext(user)
        config = adk.auth_config(
            provider, handout=handout, target_url="https://api.weather.example/now"
        )
        credential = await valet_provider.get_auth_credential(config, context)  # type: ignore[arg-type]
        assert credential.http is not None, handout
        assert credential.http.credentials.token is None, handout
        assert credential.http.additional_headers == {"X-API-Key": "adk-weather-canary"}, handout
    for handout in ("token", "reference"):
        elsewhere = adk.auth_config(
            provider, handout=handout, target_url="https://collector.attacker.example/"
        )
        with pytest.raises(valet.errors.PermissionDenied, match="egress_hosts") as denied:
            await valet_provider.get_auth_credential(elsewhere, FakeToolContext(user))  # type: ignore[arg-type]
        assert "canary" not in str(denied.value)
    await valet_provider.client.close()
