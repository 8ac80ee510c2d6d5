"""Google ADK: Valet as a tool auth provider, the self-hosted twin of ADK's Agent Identity one.

    register(AsyncClient())  # CredentialManager.register_auth_provider(ValetAuthProvider(...))
    tool = valet_tool(list_repos, provider="github", scopes=["repo"])
    agent = LlmAgent(..., tools=[tool])

At each call of the tool, ADK asks `ValetAuthProvider` for a credential. It resolves the
reference kept in session state under a `user:` key (so it is the user's across sessions), else
calls `Authenticate`. A usable grant becomes an HTTP bearer `AuthCredential` (or the headers
Valet's applied credential names) that the tool function receives as `credential`. A grant that
needs consent becomes an OAuth2 credential carrying only `auth_uri`: ADK then emits its
`adk_request_credential` function call, the app shows Valet's URL (see `consent_requests`), the
user consents (the browser lands on Valet's callback, not on the app), the app answers the
function call (`ConsentRequest.response()`), and ADK re-runs the tool, which now gets the token.

Only the opaque `vref_` reference is ever written to session state; refresh tokens and client
secrets never enter the agent process, and access tokens live only for the tool call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from google.adk.agents.callback_context import CallbackContext
from google.adk.auth.auth_credential import (
    AuthCredential,
    AuthCredentialTypes,
    HttpAuth,
    HttpCredentials,
    OAuth2Auth,
)
from google.adk.auth.auth_schemes import CustomAuthScheme
from google.adk.auth.auth_tool import AuthConfig
from google.adk.auth.base_auth_provider import BaseAuthProvider
from google.adk.auth.credential_manager import CredentialManager
from google.adk.events.event import Event
from google.adk.tools.authenticated_function_tool import AuthenticatedFunctionTool
from google.genai import types
from pydantic import Field

from valet._aio import AsyncClient
from valet.errors import NotFound, PermissionDenied, ReauthorizationRequired
from valet.types import STATIC_KINDS, AppliedCredential, AuthResult

SCHEME_TYPE = "valet"
REQUEST_CREDENTIAL = "adk_request_credential"

# The `token_type` of a static credential's handout: its raw value, not a bearer token.

# A reference that no longer resolves (revoked, expired, spent, its grant gone or dead): drop
# it and ask Valet again, which hands out a new one or starts a consent.
_STALE_REFERENCE = (NotFound, PermissionDenied, ReauthorizationRequired)


class ValetScheme(CustomAuthScheme):
    """What a tool needs from Valet: a provider's grant with these scopes, for the session's
    user (ADK's `user_id`), optionally one agent's own grant, handed out as a reference kept in
    session state (default) or as a token used once."""

    type_: str = Field(default=SCHEME_TYPE, alias="type")
    provider: str
    scopes: list[str] = Field(default_factory=list)
    agent_id: str | None = None
    handout: Literal["reference", "token"] = "reference"
    min_ttl_seconds: int = 0
    # The URL the tool sends the credential to: a reference is resolved for it only if its host
    # is on the provider's `egress_hosts` (see `Client.resolve`).
    target_url: str | None = None

    def state_key(self) -> str:
        """The `user:` session-state key of this scheme's reference. The scopes are hashed so
        two tools asking for different scopes keep different references."""
        scopes = hashlib.sha256(" ".join(sorted(self.scopes)).encode()).hexdigest()[:12]
        return f"user:valet:{self.provider}:{self.agent_id or '*'}:{scopes}"


def auth_config(
    provider: str,
    scopes: Iterable[str] = (),
    *,
    agent_id: str | None = None,
    handout: Literal["reference", "token"] = "reference",
    min_ttl_seconds: int = 0,
    target_url: str | None = None,
) -> AuthConfig:
    """An `AuthConfig` for a tool that needs a credential from Valet."""
    scheme = ValetScheme(
        provider=provider,
        scopes=list(scopes),
        agent_id=agent_id,
        handout=handout,
        min_ttl_seconds=min_ttl_seconds,
        target_url=target_url,
    )
    return AuthConfig(auth_scheme=scheme)


def valet_tool(
    func: Callable[..., Any],
    *,
    provider: str,
    scopes: Iterable[str] = (),
    agent_id: str | None = None,
    handout: Literal["reference", "token"] = "reference",
    target_url: str | None = None,
    response_for_auth_required: dict[str, Any] | str | None = None,
) -> AuthenticatedFunctionTool:
    """`func` as an ADK tool whose `credential` argument Valet fills. `target_url`: the API
    the tool calls; a reference is resolved only for a host on the provider's `egress_hosts`."""
    return AuthenticatedFunctionTool(
        func=func,
        auth_config=auth_config(
            provider, scopes, agent_id=agent_id, handout=handout, target_url=target_url
        ),
        response_for_auth_required=response_for_auth_required,
    )


def as_auth_credential(applied: AppliedCredential) -> AuthCredential:
    """Valet's applied credential as ADK's: `Authorization: Bearer …` is an HTTP bearer
    credential; any other header (or a cookie) rides in `additional_headers`; a query
    parameter is an API key."""
    if applied.location == "query":
        return AuthCredential(auth_type=AuthCredentialTypes.API_KEY, api_key=applied.value)
    scheme, _, token = applied.value.partition(" ")
    if applied.location == "header" and applied.name.lower() == "authorization" and token:
        return AuthCredential(
            auth_type=AuthCredentialTypes.HTTP,
            http=HttpAuth(scheme=scheme.lower(), credentials=HttpCredentials(token=token)),
        )
    header = (
        {"Cookie": f"{applied.name}={applied.value}"}
        if applied.location == "cookie"
        else {applied.name: applied.value}
    )
    return AuthCredential(
        auth_type=AuthCredentialTypes.HTTP,
        http=HttpAuth(scheme="bearer", credentials=HttpCredentials(), additional_headers=header),
    )


def _bearer(token: str) -> AuthCredential:
    return AuthCredential(
        auth_type=AuthCredentialTypes.HTTP,
        http=HttpAuth(scheme="bearer", credentials=HttpCredentials(token=token)),
    )


def _consent(result: AuthResult) -> AuthCredential:
    """The credential that makes ADK ask the app for consent: only Valet's URL, and Valet's
    `auth_id` as `state` so the app can `wait_for_completion(auth_id, status_only=True)` before
    answering."""
    return AuthCredential(
        auth_type=AuthCredentialTypes.OAUTH2,
        oauth2=OAuth2Auth(auth_uri=result.auth_url, state=result.auth_id),
    )


class ValetAuthProvider(BaseAuthProvider):
    """Hands ADK tools credentials from Valet. ADK takes one provider per scheme for the
    process: `register()` registers this with `CredentialManager.register_auth_provider`."""

    def __init__(self, client: AsyncClient | None = None) -> None:
        self.client = client if client is not None else AsyncClient()

    @property
    def supported_auth_schemes(self) -> tuple[type[ValetScheme], ...]:
        return (ValetScheme,)

    async def get_auth_credential(
        self, auth_config: AuthConfig, context: CallbackContext
    ) -> AuthCredential:
        """The credential for this tool call: the session's reference resolved, else what
        `Authenticate` hands out, else (consent needed) the OAuth2 credential carrying only
        Valet's consent URL, which makes ADK ask the app for consent."""
        scheme = auth_config.auth_scheme
        if not isinstance(scheme, ValetScheme):
            raise ValueError(f"ValetAuthProvider handles ValetScheme, not {type(scheme).__name__}")
        key = scheme.state_key()

        async def applied(reference: str) -> AuthCredential:
            resolved = await self.client.resolve(
                reference, scheme.min_ttl_seconds, target_url=scheme.target_url
            )
            return as_auth_credential(resolved.credential)

        if scheme.handout == "reference" and (reference := context.state.get(key)):
            try:
                return await applied(reference)
            except _STALE_REFERENCE:
                context.state[key] = None

        async def ask(handout: Literal["reference", "token"], single_use: bool) -> AuthResult:
            return await self.client.authenticate(
                scheme.provider,
                scheme.scopes,
                context.user_id,
                scheme.agent_id,
                handout=handout,
                min_ttl=scheme.min_ttl_seconds,
                single_use=single_use,
            )

        # A token for a named target_url: resolved from a single-use reference (kept nowhere), so
        # the provider's egress_hosts are checked for it as for a kept reference.
        once = scheme.handout == "token" and scheme.target_url is not None
        result = await ask("reference", True) if once else await ask(scheme.handout, False)
        if result.status == "pending":
            return _consent(result)
        if once and result.reference:
            return await applied(result.reference)
        if result.reference:
            context.state[key] = result.reference
            return await applied(result.reference)
        if result.token_type in STATIC_KINDS:
            # A stored API key or password goes where its provider says (a header of its own, a
            # query parameter, HTTP Basic), which only a resolve answers: a single-use reference,
            # resolved now and kept nowhere, as a token would be.
            once = await ask("reference", True)
            if once.reference:
                return await applied(once.reference)
        if result.header:
            # The provider's own header (Shopify), the token as it is.
            name, value = result.authorization()
            return as_auth_credential(AppliedCredential("header", name, value))
        return _bearer(result.token or "")


_registered: ValetAuthProvider | None = None


def register(client: AsyncClient | None = None) -> ValetAuthProvider:
    """Registers Valet's provider with ADK's `CredentialManager` and returns it.

    ADK keeps one provider per scheme type for the whole process and ignores later
    registrations, so this registers once (with `client`, or one from `VALET_SERVER` /
    `VALET_KEY`); calling it again with a client points the same provider at that client.
    """
    global _registered
    if _registered is None:
        _registered = ValetAuthProvider(client)
        CredentialManager.register_auth_provider(_registered)
    elif client is not None:
        _registered.client = client
    return _registered


@dataclass(frozen=True)
class ConsentRequest:
    """One `adk_request_credential` call from an event: what the app shows and answers."""

    call_id: str
    auth_url: str
    # Valet's flow id, for `wait_for_completion(auth_id, status_only=True)` before answering.
    auth_id: str | None
    auth_config: dict[str, Any]

    def response(self) -> types.Content:
        """The app's answer to the call once the user consented: ADK then re-runs the tool,
        which asks Valet again (the answer itself carries no credential)."""
        return types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        id=self.call_id, name=REQUEST_CREDENTIAL, response=self.auth_config
                    )
                )
            ],
        )


def consent_requests(event: Event) -> list[ConsentRequest]:
    """The consent requests (`adk_request_credential` calls) in an event."""
    found = []
    for call in event.get_function_calls():
        if call.name != REQUEST_CREDENTIAL or not call.args or not call.id:
            continue
        config: dict[str, Any] = dict(
            call.args.get("authConfig") or call.args.get("auth_config") or {}
        )
        exchanged = (
            config.get("exchangedAuthCredential") or config.get("exchanged_auth_credential") or {}
        )
        oauth2 = exchanged.get("oauth2") or {}
        url = oauth2.get("authUri") or oauth2.get("auth_uri")
        if url:
            found.append(ConsentRequest(call.id, url, oauth2.get("state"), config))
    return found


__all__ = [
    "SCHEME_TYPE",
    "ConsentRequest",
    "ValetAuthProvider",
    "ValetScheme",
    "as_auth_credential",
    "auth_config",
    "consent_requests",
    "register",
    "valet_tool",
]
