"""A LangGraph graph whose tool node needs a user's credential from Valet; no LLM key needed.

    export VALET_KEY=valet_…         # the admin key `valet serve --dev` printed
    python examples/langgraph_agent.py --provider github --user alice

A scripted "planner" node decides to call the API; the tool node asks Valet for a reference
(`valet.langgraph.aauthenticate`), which pauses the graph with an interrupt while the user has
not consented. This script plays the UI: it prints the consent URL, waits on Valet for the
consent, and resumes the graph with `Command(resume=...)`. The tool then resolves the reference
and reports what it got (never the token itself).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from valet import AsyncClient
from valet.langgraph import aauthenticate, aresolve


class State(TypedDict, total=False):
    user_id: str
    plan: str
    reference: str
    report: str


def build(valet: AsyncClient, provider: str, scopes: list[str]) -> Any:
    def planner(state: State) -> State:
        # Where an LLM would choose a tool; scripted so the example needs no model key.
        return {"plan": f"call the {provider} API for {state['user_id']}"}

    async def call_api(state: State) -> State:
        auth = await aauthenticate(
            valet, provider, scopes, user_id=state["user_id"], handout="reference"
        )
        resolved = await aresolve(valet, auth.reference or "")
        headers, _ = resolved.apply()
        # A real tool would now call the API with `headers`.
        report = (
            f"got a token for {provider} (scopes: {' '.join(resolved.scopes) or 'default'}; "
            f"expires_at: {resolved.expires_at or 'never'}); sending headers {sorted(headers)}"
        )
        return {"reference": auth.reference or "", "report": report}

    g = StateGraph(State)
    g.add_node("planner", planner)
    g.add_node("call_api", call_api)
    g.add_edge(START, "planner")
    g.add_edge("planner", "call_api")
    g.add_edge("call_api", END)
    return g.compile(checkpointer=InMemorySaver())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--scope", action="append", default=[], dest="scopes")
    parser.add_argument("--assistant", default="example-assistant", help="the assistant_id")
    args = parser.parse_args()

    valet = AsyncClient()  # VALET_SERVER, VALET_KEY
    graph = build(valet, args.provider, args.scopes)
    config = {"configurable": {"thread_id": f"example-{args.user}", "assistant_id": args.assistant}}
    out = await graph.ainvoke({"user_id": args.user}, config)
    while interrupts := out.get("__interrupt__"):
        request = interrupts[0].value
        print(
            f"Open this URL in a browser to grant access:\n\n  {request['auth_url']}\n", flush=True
        )
        print("Waiting for consent...", flush=True)
        # Only wait: the tool asks Valet again on resume, so nothing is handed out here.
        done = await valet.wait_for_completion(request["auth_id"], timeout=600, status_only=True)
        if done.status != "completed":
            raise SystemExit("the consent did not arrive in time")
        out = await graph.ainvoke(Command(resume="consented"), config)
    print(out["report"])
    await valet.close()


if __name__ == "__main__":
    asyncio.run(main())
