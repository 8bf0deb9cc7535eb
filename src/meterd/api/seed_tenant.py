"""``GET /api/web/v4/tenants/{tenantid}/entitlements/{type}``: the tenant entitlement page.

How meterd's model maps onto the page:

* ``tenantid`` is a meterd customer id (in the caller's org); ``type`` (``USERS``
  or ``TRANSACTIONS``) is a feature type. The entitlement shown is the
  customer's entitlement for a feature of that type that usage would burn first
  right now, else the most recently issued one; 404 if there is none.
* ``status``: ACTIVE and GRACE show ``ACTIVE``, TERMINATED ``TERMINATED``,
  anything else ``INACTIVE``. ``contractMode`` and ``billingType`` are meterd's.
  ``quantity``, ``consumed`` and ``remaining`` are real time (current period).
  An unlimited grant shows ``quantity: null``; an open-ended one ``endDate: null``.
* Sub-entitlement blocks come from the same customer's entitlements for
  features with these keys: ``sms_voice`` (smsVoice), ``flash_pass``
  (flashPass), ``fleet_management`` (fleetManagement), ``pay_to_print``
  (payToPrint), ``printer``, ``issuance``, ``id_proofing`` (idProofing, a list).
  A block is left out when the customer has no such entitlement. As the page
  says, idProofing's ``consumed`` is a percentage of the quantity for PRE_PAID.
* Requires the ``SPENTITLEMENTS:VIEW`` permission.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONResponse, exact_number
from meterd.domain import CUSTOMER_ID_MAX, PRINTABLE_PATTERN, Balance, BillingType, Status
from meterd.errors import NotFoundError
from meterd.services.api_keys import Permission, Principal
from meterd.services.records import Entitlement, Feature
from meterd.timeutil import isoformat_seconds, utcnow

router = APIRouter(tags=["seed: tenant entitlements"])


class EntitlementType(StrEnum):
    USERS = "USERS"
    TRANSACTIONS = "TRANSACTIONS"


#: Feature key -> the block of the response it fills.
BLOCKS = {
    "sms_voice": "smsVoice",
    "flash_pass": "flashPass",
    "fleet_management": "fleetManagement",
    "pay_to_print": "payToPrint",
    "printer": "printer",
    "issuance": "issuance",
}
ID_PROOFING = "id_proofing"


class TenantEntitlement(BaseModel):
    """The documented shape (blocks are objects of startDate, endDate, quantity,
    consumed and, for smsVoice, allotment and renewalQuantity)."""

    id: str
    entitlementId: str
    customerId: str
    contractNumber: str | None
    type: EntitlementType
    status: str
    contractMode: str
    usersBillingType: str
    startDate: str
    endDate: str | None
    quantity: int | None
    consumed: int | float
    remaining: int | None


def _status(status: str) -> str:
    if status in (Status.ACTIVE.value, Status.GRACE.value):
        return "ACTIVE"
    if status == Status.TERMINATED.value:
        return "TERMINATED"
    return "INACTIVE"


def _block(ent: Entitlement, balance: Balance) -> dict[str, Any]:
    return {
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": isoformat_seconds(ent.ends_at),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(balance.consumed),
    }


def _pick(rows: list[tuple[Entitlement, Feature, Balance]]) -> tuple[Entitlement, Balance] | None:
    usable = [(e, b) for e, _, b in rows if b.usable]
    if usable:
        usable.sort(
            key=lambda eb: (eb[0].priority, eb[0].ends_at is None, eb[0].ends_at, eb[0].number)
        )
        return usable[0]
    if rows:
        ent, _, balance = max(rows, key=lambda row: row[0].number)
        return ent, balance
    return None


@router.get(
    "/api/web/v4/tenants/{tenantid}/entitlements/{type}",
    response_model=TenantEntitlement,
    response_class=ExactJSONResponse,
    responses={404: {"description": "no entitlement of that type"}},
)
def tenant_entitlement(
    tenantid: Annotated[
        str, Path(min_length=1, max_length=CUSTOMER_ID_MAX, pattern=PRINTABLE_PATTERN)
    ],
    type: EntitlementType,
    runtime: RuntimeDep,
    caller: Annotated[Principal, Depends(require(Permission.SPENTITLEMENTS_VIEW))],
) -> ExactJSONResponse:
    """Get the specified entitlement for a tenant."""
    rows = runtime.queries.grants_of_customer(caller.org, tenantid, [], 10_000, utcnow())
    main = _pick([row for row in rows if row[1].type == type.value])
    if main is None:
        raise NotFoundError(f"{type.value} entitlement of tenant", tenantid)
    ent, balance = main
    body: dict[str, Any] = {
        "id": str(ent.id),
        "entitlementId": str(ent.id),
        "customerId": ent.customer_id,
        "contractNumber": ent.contract_id,
        "type": type.value,
        "status": _status(ent.status),
        "contractMode": ent.contract_mode,
        "usersBillingType": ent.billing_type,
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": isoformat_seconds(ent.ends_at),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(balance.consumed),
    }
    if type is EntitlementType.USERS:
        body["remaining"] = exact_number(balance.remaining)
    for ent_b, feature, bal in rows:
        name = BLOCKS.get(feature.key)
        if name is not None and name not in body:
            block = _block(ent_b, bal)
            if name == "smsVoice":
                block["allotment"] = exact_number(ent_b.allotment)
                block["renewalQuantity"] = exact_number(ent_b.renewal_quantity)
            body[name] = block
    proofing = [(e, b) for e, f, b in rows if f.key == ID_PROOFING]
    if proofing:
        body["idProofing"] = [_proofing(e, b) for e, b in proofing]
    return ExactJSONResponse(body)


def _proofing(ent: Entitlement, balance: Balance) -> dict[str, Any]:
    consumed: Decimal | None = balance.consumed
    if ent.billing_type == BillingType.PRE_PAID.value and balance.quantity:
        consumed = (balance.consumed * 100 / balance.quantity).quantize(
            Decimal(1), rounding=ROUND_HALF_UP
        )
    return {
        "billingType": ent.billing_type,
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": isoformat_seconds(ent.ends_at),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(consumed),
    }
