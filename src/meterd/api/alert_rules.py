"""Alert rules of the caller's org (CONTRACT 6b, issue 23): thresholds judged by
ingest in the same atomic step as the count, each firing at most once per
entitlement period through the notification outbox
(``entitlement.threshold_crossed``, naming the rule).

Reading takes ``ENTITLEMENTS:VIEW``, creating and deleting ``ENTITLEMENTS:MANAGE``
(the permission that changes what ingest judges an entitlement on). A rule of
another org is answered exactly like one that does not exist (404).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from meterd.api.auth import RuntimeDep, require
from meterd.api.exact_json import ExactJSONRoute
from meterd.api.inputs import QuantityText, RequestBody
from meterd.core.notifications import AlertKind
from meterd.core.quantity import format_quantity
from meterd.core.timeutil import isoformat, utcnow
from meterd.runtime import Runtime
from meterd.services.alert_rules import AlertRuleService, AlertRuleSpec, StoredRule
from meterd.services.api_keys import Permission, Principal

router = APIRouter(prefix="/v1", tags=["alert rules"], route_class=ExactJSONRoute)

Viewer = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_VIEW))]
Manager = Annotated[Principal, Depends(require(Permission.ENTITLEMENTS_MANAGE))]
RuleId = Annotated[str, Path(max_length=16, pattern=r"^ar_[0-9a-f]{1,13}$")]


class AlertRuleIn(RequestBody):
    kind: AlertKind = Field(
        description="PERCENT: consumed at or above this percent of the period's quantity"
        " (any value up to 10000, 150 included; needs a limited PRE_PAID period);"
        " REMAINING: remaining at or below this quantity (needs a limit);"
        " CONSUMED: consumed at or above this quantity (any entitlement)"
    )
    threshold: QuantityText = Field(
        description="an exact decimal (a string, or a JSON number read as written): a"
        " percent for PERCENT (at most 4 fractional digits), a quantity of the feature"
        " otherwise",
        examples=["150"],
    )
    feature: str | None = Field(default=None, max_length=64, description="scope: a feature key")
    customer_id: str | None = Field(default=None, max_length=128, description="scope: a customer")
    entitlement_id: uuid.UUID | None = Field(default=None, description="scope: an entitlement")


class AlertRuleOut(BaseModel):
    id: str
    scope: str = Field(description="org, feature, customer or entitlement")
    feature: str | None
    customer_id: str | None
    entitlement_id: uuid.UUID | None
    kind: AlertKind
    threshold: str
    created_at: str


def service(runtime: Runtime) -> AlertRuleService:
    return runtime.alert_rules


def rule_out(rule: StoredRule) -> AlertRuleOut:
    return AlertRuleOut(
        id=rule.id,
        scope=rule.scope,
        feature=rule.feature,
        customer_id=rule.customer_id,
        entitlement_id=rule.entitlement_id,
        kind=rule.kind,
        threshold=format_quantity(rule.threshold),
        created_at=isoformat(rule.created_at),
    )


@router.post("/alert-rules", status_code=201, response_model=AlertRuleOut)
def create_alert_rule(body: AlertRuleIn, runtime: RuntimeDep, caller: Manager) -> AlertRuleOut:
    """Create a rule; ingest judges it from the next batch on. An org with no rule
    has the defaults (80 % and 100 %); once it has one, only its rules apply."""
    spec = AlertRuleSpec(
        org=caller.org,
        kind=body.kind,
        threshold=body.threshold,
        feature=body.feature,
        customer_id=body.customer_id,
        entitlement_id=body.entitlement_id,
    )
    return rule_out(service(runtime).create(spec, utcnow()))


@router.get("/alert-rules", response_model=list[AlertRuleOut])
def list_alert_rules(runtime: RuntimeDep, caller: Viewer) -> list[AlertRuleOut]:
    """The org's live rules, oldest first (at most 50)."""
    return [rule_out(r) for r in service(runtime).rules(caller.org)]


@router.get("/alert-rules/{rule_id}", response_model=AlertRuleOut)
def get_alert_rule(rule_id: RuleId, runtime: RuntimeDep, caller: Viewer) -> AlertRuleOut:
    return rule_out(service(runtime).get(caller.org, rule_id))


@router.delete("/alert-rules/{rule_id}", status_code=204, response_class=Response)
def delete_alert_rule(rule_id: RuleId, runtime: RuntimeDep, caller: Manager) -> Response:
    """Delete a rule: ingest stops judging it at once; a crossing it recorded before
    is still notified."""
    service(runtime).delete(caller.org, rule_id, utcnow())
    return Response(status_code=204)
