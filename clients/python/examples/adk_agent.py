"""A Google ADK agent whose tool needs a user's credential from Valet; no LLM key needed.

    export VALET_KEY=valet_…         # the admin key `valet serve --dev` printed
    python examples/adk_agent.py --provider github --user alice

The model is scripted (it always calls the tool, then reports the tool's answer). The tool's
credential comes from `valet.adk.ValetAuthProvider`: the first call makes ADK emit
`adk_request_credential` with Valet's consent URL; this script plays the app: it prints the URL,
waits on Valet for the consent, and answers the function call; ADK re-runs the tool, which now
gets a token. Session state keeps only Valet's reference.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import warnings
from collections.abc import AsyncGenerator
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.auth.auth_credential import AuthCredential
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

from valet import AsyncClient, adk

# Keep the output to the example's own lines: ADK flags its credential machinery as
# experimental and logs about the scripted model's missing usage metadata.
warnings.filterwarnings("ignore", message=r"\[EXPERIMENTAL\]", category=UserWarning)
logging.getLogger("google_adk").setLevel(logging.ERROR)

APP = "valet-example"
TOOL = "call_api"


class ScriptedModel(BaseLlm):
    """Stands in for an LLM: calls the tool, then says what it returned."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1] if llm_request.contents else None
        for part in (last.parts or []) if last else []:
            answer = part.function_response
            if answer and answer.name == TOOL and isinstance(answer.response, dict):
                if "report" in answer.response:
                    text = str(answer.response["report"])
                    yield LlmResponse(
                        content=types.Content(role="model", parts=[types.Part(text=text)])
                    )
                    return
        call = types.FunctionCall(name=TOOL, args={})
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(function_call=call)])
        )


def make_tool(provider: str) -> Any:
    async def call_api(credential: AuthCredential) -> dict[str, Any]:
        """Calls the provider's API for the user."""
        token = credential.http.credentials.token if credential.http else None
        # A real tool would now send `Authorization: Bearer <token>`.
        return {"report": f"the tool got a token for {provider} ({len(token or '')} characters)"}

    return call_api


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--scope", action="append", default=[], dest="scopes")
    args = parser.parse_args()

    valet = AsyncClient()  # VALET_SERVER, VALET_KEY
    adk.register(valet)
    tool = adk.valet_tool(make_tool(args.provider), provider=args.provider, scopes=args.scopes)
    agent = LlmAgent(
        name="assistant", model=ScriptedModel(), instruction="Use the tool.", tools=[tool]
    )
    sessions = InMemorySessionService()
    runner = Runner(app_name=APP, agent=agent, session_service=sessions)
    session = await sessions.create_session(app_name=APP, user_id=args.user)

    message = types.Content(role="user", parts=[types.Part(text="Call the API for me.")])
    while True:
        requests = []
        async for event in runner.run_async(
            user_id=args.user, session_id=session.id, new_message=message
        ):
            requests += adk.consent_requests(event)
            if event.is_final_response() and event.content and event.content.parts:
                for part in event.content.parts:
                    if part.text:
                        print(part.text, flush=True)
        if not requests:
            break
        request = requests[0]
        print(f"Open this URL in a browser to grant access:\n\n  {request.auth_url}\n", flush=True)
        print("Waiting for consent...", flush=True)
        # Only wait: the tool asks Valet again on resume, so nothing is handed out here.
        done = await valet.wait_for_completion(request.auth_id or "", timeout=600, status_only=True)
        if done.status != "completed":
            raise SystemExit("the consent did not arrive in time")
        message = request.response()

    session = await sessions.get_session(app_name=APP, user_id=args.user, session_id=session.id)
    kept = {
        k: v[:5] + "…"
        for k, v in (session.state if session else {}).items()
        if k.startswith("user:valet:") and v
    }
    print(f"session state keeps: {kept}")
    await valet.close()


if __name__ == "__main__":
    asyncio.run(main())
