"""LangGraph: credentials inside nodes and tools, with consent as an interrupt.

    from valet.langgraph import authenticate
    token = authenticate(valet, "github", ["repo"], user_id="alice").token

Inside a graph run, a grant that needs the user's consent pauses the graph with
`langgraph.types.interrupt`. The payload is a superset of LangSmith Agent Auth's (`message`,
`auth_url`, `provider`, `scopes`), so UIs built for it render it, plus `auth_id` (a UI may call
`wait_for_completion(auth_id, status_only=True)` on it before resuming), `expires_at` and `type`
(`INTERRUPT_TYPE`). Resume with any
`Command(resume=...)`: the node re-runs, `authenticate` asks Valet again, and the value the UI
sent is never trusted. While the consent is still pending Valet returns the same flow, so the
graph interrupts again with the same `auth_id`.

As in LangSmith, the grant is the assistant's own (`agent_id` defaults to the run's
`assistant_id`); pass `agent_scoped=False` for the user-wide grant. With `handout="reference"`
only the opaque reference enters graph state (checkpoints persist it); `resolve` turns it into
a token inside the tool that calls the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from langgraph.config import get_config
from langgraph.types import interrupt

from valet._aio import AsyncClient
from valet._client import Client
from valet._wire import Seconds
from valet.types import AuthResult, Handout, Resolved

INTERRUPT_TYPE = "valet.authorization_required"


def _config() -> Mapping[str, Any] | None:
    """The running graph's config, or None outside a graph run."""
    try:
        return get_config()
    except RuntimeError:
        return None


def assistant_id(config: Mapping[str, Any] | None) -> str | None:
    """The run's assistant id, where LangGraph Platform and LangSmith put it."""
    if not config:
        return None
    for section in ("configurable", "metadata"):
        value = (config.get(section) or {}).get("assistant_id")
        if value:
            return str(value)
    return None


def interrupt_payload(result: AuthResult, provider: str, scopes: Iterable[str]) -> dict[str, Any]:
    """What the graph surfaces when consent is needed. No token or reference ever goes in."""
    payload: dict[str, Any] = {
        "type": INTERRUPT_TYPE,
        "message": (
            f"Authorization required for provider '{provider}': open the link to grant access, "
            "then resume."
        ),
        "auth_url": result.auth_url,
        "provider": provider,
        "scopes": list(scopes),
        "auth_id": result.auth_id,
        "expires_at": result.expires_at,
    }
    if result.user_code:
        payload["user_code"] = result.user_code
        payload["verification_uri"] = result.verification_uri
    return payload


def _request(
    scopes: Iterable[str], agent_id: str | None, agent_scoped: bool
) -> tuple[list[str], str | None, Mapping[str, Any] | None]:
    """The scopes as a list, the agent id (the assistant's by default) and the run's config."""
    config = _config()
    if agent_id is None and agent_scoped:
        agent_id = assistant_id(config)
    if isinstance(scopes, str):
        raise TypeError("scopes must be a list of strings, not one string")
    return list(scopes), agent_id, config


def _expect(client: object, kind: type, use: str) -> None:
    """Says which helper a client of the other kind goes with (a sync `Client` in an async
    helper failed with "can't be used in 'await' expression")."""
    if not isinstance(client, kind):
        raise TypeError(f"this helper takes a {kind.__name__}, not a {type(client).__name__}: {use}")


def authenticate(
    client: Client,
    provider: str,
    scopes: Iterable[str] = (),
    user_id: str | None = None,
    *,
    agent_id: str | None = None,
    agent_scoped: bool = True,
    handout: Handout = "token",
    min_ttl: Seconds | None = None,
    account: str | None = None,
    user_assertion: str | None = None,
) -> AuthResult:
    """A completed result (token or reference) for `user_id` at `provider`.

    In a graph run, consent pauses the graph (see the module docstring) and this returns only
    once Valet hands out the credential. Outside a graph run it returns the pending result, as
    `Client.authenticate` does.
    """
    _expect(client, Client, "use aauthenticate with an AsyncClient")
    scopes, agent_id, config = _request(scopes, agent_id, agent_scoped)
    while True:
        result = client.authenticate(
            provider,
            scopes,
            user_id,
            agent_id,
            handout=handout,
            min_ttl=min_ttl,
            account=account,
            user_assertion=user_assertion,
        )
        if result.status == "completed" or config is None:
            return result
        # Returns only on resume; whatever the UI sent, Valet is asked again.
        interrupt(interrupt_payload(result, provider, scopes))


async def aauthenticate(
    client: AsyncClient,
    provider: str,
    scopes: Iterable[str] = (),
    user_id: str | None = None,
    *,
    agent_id: str | None = None,
    agent_scoped: bool = True,
    handout: Handout = "token",
    min_ttl: Seconds | None = None,
    account: str | None = None,
    user_assertion: str | None = None,
) -> AuthResult:
    """`authenticate` for async nodes and tools, with an `AsyncClient`."""
    _expect(client, AsyncClient, "use authenticate with a Client")
    scopes, agent_id, config = _request(scopes, agent_id, agent_scoped)
    while True:
        result = await client.authenticate(
            provider,
            scopes,
            user_id,
            agent_id,
            handout=handout,
            min_ttl=min_ttl,
            account=account,
            user_assertion=user_assertion,
        )
        if result.status == "completed" or config is None:
            return result
        interrupt(interrupt_payload(result, provider, scopes))


def resolve(
    client: Client,
    reference: str,
    min_ttl: Seconds | None = None,
    *,
    target_url: str | None = None,
    user_assertion: str | None = None,
) -> Resolved:
    """The token for a reference kept in graph state, right before the API call; apply it with
    `resolved.apply(headers)`. Tokens stay out of state and checkpoints. `target_url`: the URL
    the token is about to go to, refused unless its host is on the provider's `egress_hosts`
    (see `Client.resolve`)."""
    _expect(client, Client, "use aresolve with an AsyncClient")
    return client.resolve(
        reference, min_ttl, target_url=target_url, user_assertion=user_assertion
    )


async def aresolve(
    client: AsyncClient,
    reference: str,
    min_ttl: Seconds | None = None,
    *,
    target_url: str | None = None,
    user_assertion: str | None = None,
) -> Resolved:
    """`resolve` with an `AsyncClient`."""
    _expect(client, AsyncClient, "use resolve with a Client")
    return await client.resolve(
        reference, min_ttl, target_url=target_url, user_assertion=user_assertion
    )


__all__ = [
    "INTERRUPT_TYPE",
    "aauthenticate",
    "aresolve",
    "assistant_id",
    "authenticate",
    "interrupt_payload",
    "resolve",
]
