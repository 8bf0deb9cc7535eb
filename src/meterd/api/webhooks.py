"""Webhook endpoints of the caller's org (``WEBHOOKS:MANAGE``): add, list, remove.

Every notification of the org is delivered to every endpoint it has when the
notification is first delivered (one delivery each, with its own attempts),
signed the Standard Webhooks way with the endpoint's secret. The secret is
``whsec_`` + base64 of a 24 to 64 byte key; omitted, one is generated and shown
in the answer to the POST only (listing shows its first characters). A target
that is private, loopback, link-local, unique-local or unspecified is refused
(400) unless ``METERD_WEBHOOK_ALLOW_PRIVATE=1``; a name is checked again at
every delivery, on the address it resolves to.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody
from meterd.config import redact_url
from meterd.core.errors import NotFoundError
from meterd.core.timeutil import isoformat, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.notify import Endpoint

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=ExactJSONRoute)

Manager = Annotated[Principal, Depends(require(Permission.WEBHOOKS_MANAGE))]


class EndpointIn(RequestBody):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// URL")
    secret: str | None = Field(
        default=None,
        max_length=200,
        description="whsec_ + base64 of a 24..64 byte key; omitted: one is generated",
    )


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str = Field(description="a password in it is shown as ***")
    secret_hint: str = Field(description="the secret's first characters")
    created_at: str


class EndpointCreated(EndpointOut):
    secret: str = Field(description="the signing secret: shown here only")


class EndpointList(BaseModel):
    data: list[EndpointOut]


def hint(secret: str) -> str:
    return secret[:10] + "..."


def endpoint_out(e: Endpoint) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        url=redact_url(e.url),
        secret_hint=hint(e.secret),
        created_at=isoformat(e.created_at),
    )


@router.post("/webhook-endpoints", response_model=EndpointCreated, status_code=201)
def create_endpoint(body: EndpointIn, runtime: RuntimeDep, caller: Manager) -> EndpointCreated:
    """Add an endpoint; the answer carries its secret (the only time it is shown)."""
    made = runtime.notifications.add_endpoint(caller.org, body.url, body.secret, utcnow())
    e = made.endpoint
    return EndpointCreated(
        id=e.id,
        url=redact_url(e.url),
        secret_hint=hint(e.secret),
        created_at=isoformat(e.created_at),
        secret=made.secret,
    )


@router.get("/webhook-endpoints", response_model=EndpointList)
def list_endpoints(runtime: RuntimeDep, caller: Manager) -> EndpointList:
    """The org's endpoints, oldest first (at most 20)."""
    return EndpointList(data=[endpoint_out(e) for e in runtime.notifications.endpoints(caller.org)])


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: uuid.UUID, runtime: RuntimeDep, caller: Manager) -> Response:
    """Remove an endpoint: its pending deliveries are cancelled; its delivery log stays."""
    if not runtime.notifications.remove_endpoint(caller.org, endpoint_id, utcnow()):
        raise NotFoundError("webhook endpoint", str(endpoint_id))
    return Response(status_code=204)
