"""Valet's Python client: credentials for AI agents from a Valet daemon over gRPC.

    from valet import Client
    valet = Client()  # VALET_SERVER, VALET_KEY
    result = valet.authenticate("github", ["repo"], user_id="alice")

`result.token` is ready when `result.status == "completed"`; otherwise show the user
`result.auth_url` and call `valet.wait_for_completion(result.auth_id)`. `AsyncClient` is the
same for asyncio. Errors are `valet.errors.ValetError` subclasses, one per `ErrorReason`.
The LangGraph and Google ADK adapters are `valet.langgraph` and `valet.adk`.
"""

from valet import errors
from valet._aio import AsyncClient
from valet._client import Client
from valet.errors import ValetError
from valet._watch import AsyncWatch, Watch
from valet.types import AppliedCredential, AuthResult, Grant, GrantEvent, Resolved, RevokeResult
from valet.v1.valet_pb2 import Provider

__all__ = [
    "AppliedCredential",
    "AsyncClient",
    "AsyncWatch",
    "AuthResult",
    "Client",
    "Grant",
    "GrantEvent",
    "Provider",
    "Resolved",
    "RevokeResult",
    "ValetError",
    "Watch",
    "errors",
]
