"""Where the daemon is and how to reach it, from arguments or the environment.

The same variables as the `valet` CLI, so one shell setup serves both: `VALET_SERVER` (default
`http://127.0.0.1:50051`; `https://` means TLS), `VALET_KEY`, and for TLS `VALET_TLS_CA` (the CA
that signed the daemon's certificate; the system roots when unset) plus `VALET_TLS_CERT` /
`VALET_TLS_KEY` for a client certificate (mTLS). Arguments win over the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

DEFAULT_SERVER = "http://127.0.0.1:50051"

# Long polls and many agents share one connection; keepalives notice a dead daemon early.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


@dataclass(frozen=True)
class Endpoint:
    """A resolved connection: the gRPC address, TLS credentials (None: plaintext) and key."""

    server: str
    address: str
    credentials: grpc.ChannelCredentials | None
    key: str | None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: `authorization: Bearer <key>`, or nothing without a key (the
        daemon then answers UNAUTHENTICATED, as to any caller that forgot one)."""
        return (("authorization", f"Bearer {self.key}"),) if self.key else ()

    def __repr__(self) -> str:
        key = "<redacted>" if self.key else None
        tls = self.credentials is not None
        return f"Endpoint(server={self.server!r}, tls={tls}, key={key!r})"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path!r}: {e.strerror}") from None


def resolve_endpoint(
    target: str | None,
    api_key: str | None,
    *,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Endpoint:
    """Resolves arguments and `env` (default: `os.environ`) into an `Endpoint`.

    Raises ValueError with what to fix for a malformed server URL, a key that cannot travel in
    gRPC metadata, or TLS settings that do not fit the server's scheme.
    """
    env = os.environ if env is None else env
    server = target or env.get("VALET_SERVER") or DEFAULT_SERVER
    url = urlsplit(server)
    if url.username is not None or url.password is not None:
        # Never echo the URL: its password is a secret.
        raise ValueError(
            "the Valet server URL must not hold a user name or password; "
            "the API key goes in api_key (or VALET_KEY)"
        )
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
        # Never echo the value: an API key passed as the first argument (`Client(key)`) lands
        # here.
        raise ValueError(
            f"the Valet server must be a URL like {DEFAULT_SERVER} or "
            "https://valet.example:50051 (the value given is not shown; if it is the API key, "
            "pass it as api_key= or VALET_KEY)"
        )
    tls = url.scheme == "https"
    try:
        port = url.port or (443 if tls else 80)
    except ValueError:
        raise ValueError("the Valet server URL has an invalid port") from None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    address = f"{host}:{port}"

    key = api_key if api_key is not None else env.get("VALET_KEY") or None
    if key is not None and (not key.isascii() or not key.isprintable() or key != key.strip()):
        # Never echo the key: it is a secret even when malformed.
        raise ValueError("the API key holds characters not allowed in gRPC metadata")

    if root_certificates is None and env.get("VALET_TLS_CA"):
        root_certificates = _read(env["VALET_TLS_CA"], "VALET_TLS_CA")
    if certificate_chain is None and private_key is None:
        cert, pkey = env.get("VALET_TLS_CERT"), env.get("VALET_TLS_KEY")
        if bool(cert) != bool(pkey):
            raise ValueError("VALET_TLS_CERT and VALET_TLS_KEY go together (mTLS)")
        if cert and pkey:
            certificate_chain = _read(cert, "VALET_TLS_CERT")
            private_key = _read(pkey, "VALET_TLS_KEY")
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mTLS)")
    tls_settings = root_certificates is not None or certificate_chain is not None
    if tls_settings and not tls:
        raise ValueError(f"TLS settings were given but the server {server!r} is not https://")

    credentials = (
        grpc.ssl_channel_credentials(
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
        )
        if tls
        else None
    )
    return Endpoint(server=server, address=address, credentials=credentials, key=key)
