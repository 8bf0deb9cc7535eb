"""API keys of the caller's org: list them (never a secret), create one and rotate one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.errors import HttpError
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import RequestBody, moment
from meterd.core.domain import NO_NUL_PATTERN
from meterd.core.timeutil import isoformat, isoformat_or_none, utcnow
from meterd.services.api_keys import NEVER, KeyInfo, Permission, Principal

router = APIRouter(prefix="/v1", tags=["api keys"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.KEYS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.KEYS_MANAGE))]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="the key's id (16 hex)")]


class LimitOut(BaseModel):
    rate: int = Field(description="requests a second")
    burst: int = Field(description="requests at once, at most")


class ApiKeyOut(BaseModel):
    """Everything about a key but its secret (and the secret's hash)."""

    id: str
    name: str
    prefix: str = Field(description="the public start of the key, mk_<id>_")
    permissions: list[str]
    status: str = Field(description="active, expired or revoked")
    created_at: str
    last_used_at: str | None = Field(description="to the minute, about")
    expires_at: str | None
    revoked_at: str | None
    rate_limit: int | None = Field(description="the key's own rate; null: the default; 0: none")
    rate_burst: int | None = Field(description="the key's own burst; null: the default")
    limit: LimitOut | None = Field(description="the limit that applies; null: unlimited")
    rotated_from: str | None


def key_out(key: KeyInfo) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        permissions=key.permissions,
        status=key.status,
        created_at=isoformat(key.created_at),
        last_used_at=isoformat_or_none(key.last_used_at),
        expires_at=isoformat_or_none(key.expires_at),
        revoked_at=isoformat_or_none(key.revoked_at),
        rate_limit=key.rate_limit,
        rate_burst=key.rate_burst,
        limit=None if key.limit is None else LimitOut(rate=key.limit.rate, burst=key.limit.burst),
        rotated_from=key.rotated_from,
    )


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(runtime: RuntimeDep, caller: Viewer) -> list[ApiKeyOut]:
    return [key_out(k) for k in runtime.api_keys.list(caller.org)]


class RotateIn(RequestBody):
    old_valid_until: datetime = Field(
        description="RFC 3339 with a timezone: the old key works until then"
    )
    expires_at: datetime | None = Field(
        default=None,
        description="the new key's expiry, at the latest that of the old key and of the"
        " caller's key; left out: that latest (never, if neither expires); null: never"
        " (400 unless neither expires)",
    )
    permissions: list[Permission] | None = Field(
        default=None,
        min_length=1,
        max_length=len(Permission),
        description="the new key's, among the old key's (400 for one it lacks);"
        " left out: the old key's",
    )


class RotatedOut(ApiKeyOut):
    key: str = Field(description="the new key: shown once, never stored")


@router.post("/api-keys/{key_id}/rotate", status_code=201, response_model=RotatedOut)
def rotate_api_key(
    key_id: KeyId, body: RotateIn, runtime: RuntimeDep, caller: Manager
) -> RotatedOut:
    """A new key with the same org, name, limits and permissions (or fewer); the old
    one keeps working until ``old_valid_until``. Only a key holding no permission the
    caller lacks may be rotated (else a key manager could mint itself a broader key),
    and the new key outlives neither the old key nor the caller's (else a key about
    to expire could rotate itself into one that never does), nor, keeping the old
    key's rate limit, is it less limited than the caller's: 400 naming the bound."""
    old = runtime.api_keys.get(key_id, caller.org)
    if not caller.holds_all(frozenset(old.permissions)):
        raise HttpError(403, f"the API key {key_id} holds permissions the caller lacks")
    old_valid_until = moment(body.old_valid_until, "old_valid_until")
    assert old_valid_until is not None
    never = "expires_at" in body.model_fields_set and body.expires_at is None
    token, row = runtime.api_keys.rotate(
        key_id,
        old_valid_until,
        utcnow(),
        org=caller.org,
        expires_at=NEVER if never else moment(body.expires_at, "expires_at"),
        permissions=body.permissions,
        by=caller.key_id,
    )
    return RotatedOut(key=token, **key_out(runtime.api_keys.get(row.id)).model_dump())


class KeyIn(RequestBody):
    permissions: list[Permission] = Field(
        min_length=1,
        max_length=len(Permission),
        description="among the caller's own (403 for one it lacks)",
    )
    name: str = Field(default="", max_length=200, pattern=NO_NUL_PATTERN)
    expires_at: datetime | None = Field(
        default=None,
        description="RFC 3339 with a timezone; at the latest the caller's key's expiry"
        " (left out or null: that expiry, or never if the caller's key never expires)",
    )
    rate_limit: int | None = Field(
        default=None,
        description="requests a second; 0: unlimited; null: the default. A rate-limited"
        " caller (its own limit or the default) mints no key less limited than its own:"
        " at most its rate, 0 refused (400); left out: the caller's own setting",
    )
    rate_burst: int | None = Field(
        default=None,
        description="null: twice the rate; from a rate-limited caller at most its burst"
        " (400), and left out: the caller's own when rate_limit is left out too, else"
        " twice the rate but at most the caller's burst",
    )


@router.post("/api-keys", status_code=201, response_model=RotatedOut)
def create_api_key(body: KeyIn, runtime: RuntimeDep, caller: Manager) -> RotatedOut:
    """Issue a key of the caller's org; the secret (``key``) is in this answer only,
    never stored. A key manager mints no key broader than its own (403 for a
    permission it lacks) nor one that outlives it or is less rate-limited than it
    (400 naming the field)."""
    wanted = frozenset(p.value for p in body.permissions)
    if not caller.holds_all(wanted):
        raise HttpError(403, "a new key cannot hold a permission the caller lacks")
    expires_at = moment(body.expires_at, "expires_at") or caller.expires_at
    if (
        caller.expires_at is not None
        and expires_at is not None
        and (expires_at > caller.expires_at)
    ):
        raise HttpError(400, f"expires_at: at the latest {isoformat(caller.expires_at)}")
    token, row = runtime.api_keys.create(
        caller.org,
        list(body.permissions),
        utcnow(),
        name=body.name,
        expires_at=expires_at,
        rate_limit=body.rate_limit,
        rate_burst=body.rate_burst,
        by=caller.key_id,
    )
    return RotatedOut(key=token, **key_out(runtime.api_keys.get(row.id)).model_dump())
