"""LangGraph 1.2 with InMemorySaver: consent as an interrupt, resume re-asks Valet, references in
state. No LLM: the nodes call the adapter directly."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypedDict

import pytest

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

import valet
from valet.langgraph import INTERRUPT_TYPE, aauthenticate, authenticate, resolve

from conftest import Stack


class State(TypedDict, total=False):
    reference: str
    userinfo: int


def token_graph(stack: Stack, client: valet.Client, user: str) -> Any:
    def call_api(state: State) -> State:
        token = authenticate(client, "idp", ["openid", "email"], user_id=user).token or ""
        return {"userinfo": stack.idp.userinfo_status(token)}

    g = StateGraph(State)
    g.add_node("call_api", call_api)
    g.add_edge(START, "call_api")
    g.add_edge("call_api", END)
    return g.compile(checkpointer=InMemorySaver())


def only_interrupt(out: dict[str, Any]) -> dict[str, Any]:
    interrupts = out.get("__interrupt__") or []
    assert len(interrupts) == 1, out
    value: dict[str, Any] = interrupts[0].value
    return value


def test_a_node_interrupts_for_consent_and_finishes_with_a_live_token_on_resume(
    stack: Stack, agent: valet.Client, user: str
) -> None:
    graph = token_graph(stack, agent, user)
    config = {"configurable": {"thread_id": f"t-{user}", "assistant_id": "planner"}}

    payload = only_interrupt(graph.invoke({}, config))
    assert payload["type"] == INTERRUPT_TYPE
    assert payload["provider"] == "idp" and payload["scopes"] == ["openid", "email"]
    assert payload["auth_url"].startswith(f"{stack.idp.issuer}/auth?")
    assert payload["auth_id"] and payload["expires_at"] > 0
    assert "idp" in payload["message"]
    assert set(payload) >= {
        "message",
        "auth_url",
        "provider",
        "scopes",
        "auth_id",
        "expires_at",
        "type",
    }

    # Resuming before consent: Valet is asked again, the resume value is not trusted, and the
    # same flow is surfaced again.
    again = only_interrupt(
        graph.invoke(Command(resume={"status": "completed", "token": "forged"}), config)
    )
    assert again["auth_id"] == payload["auth_id"] and again["auth_url"] == payload["auth_url"]

    stack.consent(payload["auth_url"], user)
    done = graph.invoke(Command(resume="done"), config)
    assert "__interrupt__" not in done
    assert done["userinfo"] == 200

    # agent_id defaulted to the run's assistant_id: the grant is the planner's own.
    [grant] = agent.list_grants("idp", user)
    assert grant.agent_id == "planner"
    # A second run of the graph needs no consent: the cached grant is handed out.
    second = graph.invoke(
        {}, {"configurable": {"thread_id": f"t2-{user}", "assistant_id": "planner"}}
    )
    assert second["userinfo"] == 200


async def test_references_only_are_checkpointed_and_a_tool_resolves_them(
    stack: Stack, user: str
) -> None:
    client = stack.async_client()
    sync = stack.client()
    tokens: list[str] = []

    async def get_reference(state: State) -> State:
        auth = await aauthenticate(
            client, "idp", user_id=user, handout="reference", agent_scoped=False
        )
        return {"reference": auth.reference or ""}

    def call_api(state: State) -> State:
        resolved = resolve(sync, state["reference"])
        tokens.append(resolved.token)
        headers, _ = resolved.apply()
        return {
            "userinfo": stack.idp.userinfo_status(headers["Authorization"].removeprefix("Bearer "))
        }

    g = StateGraph(State)
    g.add_node("get_reference", get_reference)
    g.add_node("call_api", call_api)
    g.add_edge(START, "get_reference")
    g.add_edge("get_reference", "call_api")
    g.add_edge("call_api", END)
    saver = InMemorySaver()
    graph = g.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": f"r-{user}"}}

    payload = only_interrupt(await graph.ainvoke({}, config))
    stack.consent(payload["auth_url"], user)
    done = await graph.ainvoke(Command(resume=True), config)
    assert done["userinfo"] == 200 and done["reference"].startswith("vref_")
    [grant] = await client.list_grants("idp", user)
    assert grant.agent_id == "", "agent_scoped=False asks for the user-wide grant"

    # Every checkpoint of the thread holds the reference, never a token.
    history = [s.values for s in graph.get_state_history(config)]
    dumped = json.dumps(history, default=str)
    assert done["reference"] in dumped
    assert tokens and all(t not in dumped for t in tokens)
    assert all(t not in repr(saver.storage) for t in tokens)
    await client.close()
    sync.close()


def test_outside_a_graph_run_the_pending_result_is_returned(agent: valet.Client, user: str) -> None:
    result = authenticate(agent, "idp", user_id=user)
    assert result.status == "pending" and result.auth_url


def test_resolve_names_the_target_url_and_clients_of_the_other_kind_are_refused(
    stack: Stack, user: str
) -> None:
    """The helpers pass `target_url` on, so the provider's `egress_hosts` hold in a graph too;
    a client of the other kind is refused saying which helper it goes with."""
    provider = stack.stored_key(f"weather-lg-{user[-6:]}", user, "lg-weather-canary")
    with stack.client() as agent:
        ref = authenticate(agent, provider, user_id=user, handout="reference").reference or ""
        ok = resolve(agent, ref, target_url="https://api.weather.example/now")
        assert ok.credential.apply() == ({"X-API-Key": "lg-weather-canary"}, {})
        with pytest.raises(valet.errors.PermissionDenied, match="egress_hosts"):
            resolve(agent, ref, target_url="https://collector.attacker.example/")
        with pytest.raises(TypeError, match="use aauthenticate with an AsyncClient"):
            authenticate(stack.async_client(), provider, user_id=user)  # type: ignore[arg-type]

    async def wrong() -> None:
        await aauthenticate(agent, provider, user_id=user)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="use authenticate with a Client"):
        asyncio.run(wrong())
