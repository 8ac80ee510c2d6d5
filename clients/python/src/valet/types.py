"""What the client hands back: plain, immutable values named after the proto's fields.

Anything that works as a credential (an access token, a reference, an applied header value) is
shown as `<redacted>` by `repr()` and `str()`, so a result that ends up in a log line, a
traceback or an LLM transcript leaks nothing. Read the attribute to use the value.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

REDACTED = "<redacted>"

Status = Literal["completed", "pending"]
Handout = Literal["token", "reference"]


class _Redacting:
    """A dataclass mixin whose `repr` hides the fields listed in `_SECRETS`."""

    _SECRETS: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            value = getattr(self, f.name)
            text = REDACTED if f.name in self._SECRETS and value else repr(value)
            shown.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__


# The token_type of a stored static credential's handout: its kind.
STATIC_KINDS = frozenset({"api_key", "http_basic", "http_bearer"})


@dataclass(frozen=True, repr=False)
class AuthResult(_Redacting):
    """The answer to `authenticate` or `wait_for_completion`.

    `status` is "completed" when the grant was usable: `token` (handout "token") or `reference`
    (handout "reference") is set. It is "pending" when the user must consent first: show them
    `auth_url` and wait on `auth_id`; asking again while the flow is pending returns the same one.

    `expires_at` is Unix seconds: the token's or reference's expiry (None when the provider gave
    the token no lifetime), or for a pending flow when it fails closed.

    A token goes on requests as `Authorization: Bearer <token>`, unless `header` names the
    header the provider takes it in as it is (Shopify: `X-Shopify-Access-Token`);
    `authorization()` gives the pair either way.
    """

    _SECRETS: ClassVar[frozenset[str]] = frozenset({"token", "reference"})

    status: Status
    token: str | None = None
    token_type: str | None = None
    header: str | None = None
    reference: str | None = None
    expires_at: int | None = None
    scopes: tuple[str, ...] = ()
    missing_scopes: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    auth_url: str | None = None
    auth_id: str | None = None
    user_code: str | None = None
    verification_uri: str | None = None

    @property
    def needs_auth(self) -> bool:
        """True while the user has not consented (LangSmith Agent Auth's name for `pending`)."""
        return self.status == "pending"

    def authorization(self) -> tuple[str, str]:
        """The token as a request header `(name, value)`: `("Authorization", "Bearer …")`, or the
        provider's own header with the token as it is. Raises ValueError without a token, and
        for a stored static credential (its provider says where it goes: resolve a reference)."""
        if not self.token:
            raise ValueError(
                "this result holds no token (a reference, or a flow still pending): resolve the "
                "reference, or wait for the flow"
            )
        if self.token_type in STATIC_KINDS:
            raise ValueError(
                f"a stored {self.token_type} credential goes where its provider says (a header of "
                "its own, a query parameter, HTTP Basic): ask for a reference and resolve it, "
                "whose credential says where"
            )
        if self.header:
            return (self.header, self.token)
        return ("Authorization", f"Bearer {self.token}")


@dataclass(frozen=True, repr=False)
class AppliedCredential(_Redacting):
    """A credential ready for an HTTP request: where it goes, under which name, with what value.

    For OAuth grants this is `Authorization: Bearer <token>`, whatever `token_type` the provider
    spelled, unless the provider takes its token in a header of its own (Shopify:
    `X-Shopify-Access-Token`); static credentials go where their provider says (header, query,
    cookie).
    """

    _SECRETS: ClassVar[frozenset[str]] = frozenset({"value"})

    location: str
    name: str
    value: str

    def apply(
        self,
        headers: MutableMapping[str, str] | None = None,
        params: MutableMapping[str, str] | None = None,
    ) -> tuple[MutableMapping[str, str], MutableMapping[str, str]]:
        """Puts the credential on a request's headers or query parameters, in place.

        Returns `(headers, params)` (new dicts when None was passed), ready for `requests`,
        `httpx` or `aiohttp`. A cookie is appended to the `Cookie` header.
        """
        headers = {} if headers is None else headers
        params = {} if params is None else params
        if self.location == "query":
            params[self.name] = self.value
        elif self.location == "cookie":
            cookie = f"{self.name}={self.value}"
            existing = headers.get("Cookie")
            headers["Cookie"] = f"{existing}; {cookie}" if existing else cookie
        else:
            headers[self.name] = self.value
        return headers, params


@dataclass(frozen=True, repr=False)
class Resolved(_Redacting):
    """The answer to `resolve`: a fresh access token for the reference's grant, and the
    credential to apply to the API call."""

    _SECRETS: ClassVar[frozenset[str]] = frozenset({"token"})

    token: str
    credential: AppliedCredential
    token_type: str = ""
    expires_at: int | None = None
    scopes: tuple[str, ...] = ()
    missing_scopes: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def apply(
        self,
        headers: MutableMapping[str, str] | None = None,
        params: MutableMapping[str, str] | None = None,
    ) -> tuple[MutableMapping[str, str], MutableMapping[str, str]]:
        """Shorthand for `self.credential.apply(headers, params)`."""
        return self.credential.apply(headers, params)


@dataclass(frozen=True)
class Grant:
    """A grant's metadata, as `list_grants` shows it. Never carries a token."""

    provider_id: str
    user_id: str
    agent_id: str
    scopes: tuple[str, ...]
    subject: str
    created_at: int
    updated_at: int
    # "active", or "needs_reauth" once the provider refused the refresh token.
    status: str
    has_refresh_token: bool
    metadata: Mapping[str, str]
    declined_scopes: tuple[str, ...]
    # The provider's kind, e.g. "oidc", "oauth2", "api_key".
    kind: str
    issuer: str
    has_stored_value: bool
    # One of the user's several accounts at the provider (e.g. "work"); "": the default one.
    account: str = ""
    # The connected account's email, from the verified ID token (OpenID Connect providers).
    email: str = ""


@dataclass(frozen=True)
class GrantEvent:
    """A grant's lifecycle event, as `watch_grants` streams it. Never carries a token."""

    # "created", "refreshed", "needs_reauth", "revoked", "refresh_failed" or "reauth_due".
    kind: str
    provider_id: str
    user_id: str
    # "": the user-wide grant.
    agent_id: str
    # Unix seconds.
    at: int
    # Events dropped for this watch because it fell behind (0 normally).
    missed: int = 0


@dataclass(frozen=True)
class RevokeResult:
    """What `revoke` did. `provider_revocation` is "revoked", "not_supported",
    "nothing_to_revoke" or "failed" (then `provider_error` says why)."""

    revoked: bool
    provider_revocation: str
    provider_error: str = ""
