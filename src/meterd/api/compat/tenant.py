"""``GET /api/web/v4/tenants/{tenantid}/entitlements/{type}``: the tenant entitlement page.

How meterd's model maps onto the page:

* ``tenantid`` is a meterd customer id (in the caller's org); ``type`` (``USERS``
  or ``TRANSACTIONS``) is a feature type. The main entitlement comes only from
  the customer's grants of features of that type, leaving out the features that
  fill a sub-block (below); 404 if there is none. Of those, the one shown is the
  one usage would burn right now (``services.compat_queries.choose_for_usage``): the
  first usable grant in burn-down order that still has room, else the last
  usable one (where overage lands), else the most recently issued.
* Main fields: ``id`` and ``entitlementId`` (the entitlement id),
  ``customerId``, ``contractNumber`` (contract_id), ``type``, ``status``
  (ACTIVE and GRACE show ``ACTIVE``, TERMINATED ``TERMINATED``, anything else
  ``INACTIVE``), ``contractMode``, ``usersBillingType`` (billing_type),
  ``startDate``, ``endDate``, and real-time ``quantity``, ``consumed`` and (USERS
  only) ``remaining`` of the current period. An unlimited grant shows
  ``quantity: null``. ``endDate`` is required by the page, so an open-ended grant
  shows ``9999-12-31T23:59:59Z`` (``OPEN_ENDED``), here and in every block.
* The page's fields meterd has no column for are the entitlement's
  ``attributes`` (``TenantAttributes``, under the page's names): the main grant's
  ``smartLoginEnabled``, ``additionalFeatures`` and ``userBundles``; the issuance
  grant's ``serviceBundles`` (always returned, ``[]`` when unset: the page
  requires it) and ``addOn``, the fleet_management and pay_to_print grants'
  ``addOn``; each id_proofing grant's ``faceRecognitionType``. Unset ones are
  left out.
* Sub-entitlement blocks come from the same customer's entitlements for
  features with these keys: ``sms_voice`` (smsVoice, with ``allotment``: what
  its live child grants hold once it allotted any, else the recorded cap; and
  ``renewalQuantity``), ``flash_pass`` (flashPass), ``fleet_management``
  (fleetManagement), ``pay_to_print`` (payToPrint), ``printer``, ``issuance``,
  ``id_proofing`` (idProofing, a list of one). Each is chosen by the same rule as
  the main entitlement. A block is left out when the customer has no such
  entitlement. As the page says, idProofing's ``consumed`` is a percentage of
  the quantity for PRE_PAID, and issuance's ``startDate``, ``endDate`` and
  ``quantity`` are not returned for PRODUCTION (the issuance grant's own
  contract mode).
* ``filters`` (meterd's own field): the dimensions of the grant shown, on the
  main entitlement, each block and each idProofing item; left out when the grant
  has none.
* Requires the ``SPENTITLEMENTS:VIEW`` permission.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from meterd.api.auth import RuntimeDep, require
from meterd.api.compat.attributes import (
    AdditionalFeatures,
    Bundle,
    FaceRecognitionType,
    TenantAttributes,
)
from meterd.api.exact_json import ExactJSONResponse, ExactJSONRoute, exact_number
from meterd.core.domain import (
    CUSTOMER_ID_MAX,
    PRINTABLE_PATTERN,
    Balance,
    BillingType,
    ContractMode,
    Status,
)
from meterd.core.errors import NotFoundError
from meterd.core.timeutil import isoformat_seconds, utcnow
from meterd.services.api_keys import Permission, Principal
from meterd.services.compat_queries import choose_for_usage
from meterd.services.values import Entitlement

router = APIRouter(tags=["seed: tenant entitlements"], route_class=ExactJSONRoute)


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
#: Features that fill a sub-block never give the main entitlement, whatever their type.
SUB_BLOCK_FEATURES = frozenset(BLOCKS) | {ID_PROOFING}


#: What ``endDate`` shows for an open-ended grant: the page requires a date-time, so
#: "no end" is the last second a date-time can name (it sorts after every real end).
OPEN_ENDED = "9999-12-31T23:59:59Z"
#: The blocks whose grant's ``addOn`` attribute is shown.
ADD_ON_BLOCKS = frozenset({"fleetManagement", "issuance", "payToPrint"})
#: The main grant's attributes shown at the top level.
MAIN_ATTRIBUTES = frozenset({"additionalFeatures", "smartLoginEnabled", "userBundles"})
#: Issuance fields the page returns for a trial only.
ISSUANCE_TRIAL_ONLY = ("startDate", "endDate", "quantity")

Number = int | float
#: A grant's dimensions, as shown (``filters``).
Filters = dict[str, StrictStr | StrictInt | StrictBool]
_FILTERS = "meterd: the grant's dimensions (left out when it has none)"


class Block(BaseModel):
    """A sub-entitlement block (flashPass, printer; the others add to it)."""

    startDate: str | None = None
    endDate: str | None = None
    quantity: Number | None = None
    consumed: Number | None = None
    filters: Filters | None = Field(default=None, description=_FILTERS)


class SmsVoiceBlock(Block):
    allotment: Number | None = None
    renewalQuantity: Number | None = None


class AddOnBlock(Block):
    addOn: str | None = None


class IssuanceBlock(AddOnBlock):
    serviceBundles: list[Bundle]


class IdProofingItem(BaseModel):
    billingType: BillingType
    startDate: str
    endDate: str
    quantity: Number | None
    consumed: Number | None = Field(description="percent of the quantity for PRE_PAID")
    faceRecognitionType: FaceRecognitionType | None = None
    filters: Filters | None = Field(default=None, description=_FILTERS)


class TenantEntitlement(BaseModel):
    """The documented shape. Optional fields and blocks are left out when meterd has
    nothing for them."""

    id: str
    entitlementId: str
    customerId: str
    contractNumber: str | None
    type: EntitlementType
    status: str
    contractMode: str
    usersBillingType: str
    startDate: str
    endDate: str = Field(description=f"{OPEN_ENDED} for an open-ended grant")
    quantity: Number | None = Field(description="null: unlimited")
    consumed: Number
    remaining: Number | None = Field(default=None, description="USERS only")
    smartLoginEnabled: bool | None = None
    additionalFeatures: AdditionalFeatures | None = None
    userBundles: list[Bundle] | None = None
    smsVoice: SmsVoiceBlock | None = None
    flashPass: Block | None = None
    fleetManagement: AddOnBlock | None = None
    payToPrint: AddOnBlock | None = None
    printer: Block | None = None
    issuance: IssuanceBlock | None = None
    idProofing: list[IdProofingItem] | None = None
    filters: Filters | None = Field(default=None, description=_FILTERS)


def _status(status: Status) -> str:
    """The page's status of the status now (from the clock, like every read)."""
    if status in (Status.ACTIVE, Status.GRACE):
        return "ACTIVE"
    if status is Status.TERMINATED:
        return "TERMINATED"
    return "INACTIVE"


def _end_date(balance: Balance) -> str:
    """The end of the current term (a renewing grant: this term's)."""
    return isoformat_seconds(balance.ends_at) or OPEN_ENDED


def _attributes(ent: Entitlement) -> TenantAttributes:
    return TenantAttributes.model_validate(ent.attributes)


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
    rows = runtime.compat_queries.grants_of_customer(caller.org, tenantid, [], 10_000, utcnow())
    main = choose_for_usage(
        [row for row in rows if row[1].type == type.value and row[1].key not in SUB_BLOCK_FEATURES]
    )
    if main is None:
        raise NotFoundError(f"{type.value} entitlement of tenant", tenantid)
    body = _main(main[0], main[2], type)
    for key, name in BLOCKS.items():
        chosen = choose_for_usage([row for row in rows if row[1].key == key])
        if chosen is not None:
            allotted = None
            if name == "smsVoice":
                allotted = runtime.allotments.allotted([chosen[0].id]).get(chosen[0].id)
            body[name] = _block(name, chosen[0], chosen[2], allotted)
    proofing = choose_for_usage([row for row in rows if row[1].key == ID_PROOFING])
    if proofing is not None:
        body["idProofing"] = [_proofing(proofing[0], proofing[2])]
    return ExactJSONResponse(body)


def _main(ent: Entitlement, balance: Balance, type: EntitlementType) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(ent.id),
        "entitlementId": str(ent.id),
        "customerId": ent.customer_id,
        "contractNumber": ent.contract_id,
        "type": type.value,
        "status": _status(balance.status),
        "contractMode": ent.contract_mode,
        "usersBillingType": ent.billing_type,
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": _end_date(balance),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(balance.consumed),
    }
    if type is EntitlementType.USERS:
        body["remaining"] = exact_number(balance.remaining)
    body.update(
        _attributes(ent).model_dump(mode="json", exclude_none=True, include=set(MAIN_ATTRIBUTES))
    )
    _add_filters(body, ent)
    return body


def _add_filters(part: dict[str, Any], ent: Entitlement) -> None:
    """The grant's dimensions, if it has any (``filters``)."""
    if ent.filters:
        part["filters"] = dict(ent.filters)


def _block(
    name: str, ent: Entitlement, balance: Balance, allotted: Decimal | None = None
) -> dict[str, Any]:
    attributes = _attributes(ent)
    block: dict[str, Any] = {
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": _end_date(balance),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(balance.consumed),
    }
    if name == "smsVoice":
        # What its children hold, once it allotted (POST .../allotments); before
        # that, the allotment recorded on it (the cap it may allot).
        block["allotment"] = exact_number(allotted if allotted is not None else ent.allotment)
        block["renewalQuantity"] = exact_number(ent.renewal_quantity)
    if name in ADD_ON_BLOCKS and attributes.addOn is not None:
        block["addOn"] = attributes.addOn
    if name == "issuance":
        block["serviceBundles"] = [
            bundle.model_dump(mode="json", exclude_none=True)
            for bundle in attributes.serviceBundles or []
        ]
        if ent.contract_mode == ContractMode.PRODUCTION.value:
            for trial_only in ISSUANCE_TRIAL_ONLY:
                del block[trial_only]
    _add_filters(block, ent)
    return block


def _proofing(ent: Entitlement, balance: Balance) -> dict[str, Any]:
    consumed: Decimal | None = balance.consumed
    if ent.billing_type == BillingType.PRE_PAID.value and balance.quantity:
        consumed = (balance.consumed * 100 / balance.quantity).quantize(
            Decimal(1), rounding=ROUND_HALF_UP
        )
    item = {
        "billingType": ent.billing_type,
        "startDate": isoformat_seconds(ent.starts_at),
        "endDate": _end_date(balance),
        "quantity": exact_number(balance.quantity),
        "consumed": exact_number(consumed),
    }
    face = _attributes(ent).faceRecognitionType
    if face is not None:
        item["faceRecognitionType"] = face.value
    _add_filters(item, ent)
    return item
