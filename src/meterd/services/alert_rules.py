"""Alert rules (issue 23, CONTRACT 6b): an org's thresholds, judged by ingest in the
same atomic step as the count.

The rules that apply to an entitlement travel in its resolution entry
(``storage/resolution.py``), so a change reaches ingest only when the entries are
rewritten: like a change to entitlements (``services/catalog``), creating or
deleting a rule rewrites, right after it commits, the entries of every customer
and feature its scope takes in, and all of the org's when the org goes from no
rules to some or back (its entitlements leave or regain the defaults).

Scopes add up: an entitlement is judged on every live rule of its org whose
scope takes it in (org-wide, its feature, its customer, itself); none overrides
another, and each fires at most once per period.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import InvalidError
from meterd.core.notifications import MAX_PERCENT, PERCENT_DIGITS, AlertKind
from meterd.core.quantity import parse_decimal_text
from meterd.services.resolution import ResolutionCache
from meterd.storage.alert_rules import MAX_RULES_PER_ORG, AlertRuleStore, StoredRule, new_rule_id
from meterd.storage.features import FeatureStore

__all__ = ["AlertRuleError", "AlertRuleService", "AlertRuleSpec", "StoredRule", "checked_threshold"]

#: Resolution entries rewritten per call.
_REFRESH_CHUNK = 500


class AlertRuleError(InvalidError):
    """A rule that cannot be created as asked."""


@dataclass(frozen=True, slots=True)
class AlertRuleSpec:
    org: str
    kind: AlertKind
    #: Decimal text: a percent for PERCENT, a quantity of the feature otherwise.
    threshold: str
    feature: str | None = None
    customer_id: str | None = None
    entitlement_id: uuid.UUID | None = None


def checked_threshold(kind: AlertKind, text: str) -> Decimal:
    """The threshold of a rule of ``kind``: PERCENT above 0 and at most 10000, with
    at most 4 fractional digits; CONSUMED above 0; REMAINING 0 or more."""
    value = parse_decimal_text(text, "threshold")
    if kind is AlertKind.PERCENT:
        exponent = value.normalize().as_tuple().exponent
        if not 0 < value <= MAX_PERCENT or (
            isinstance(exponent, int) and -exponent > PERCENT_DIGITS
        ):
            raise AlertRuleError(
                f"a PERCENT threshold is above 0 and at most {MAX_PERCENT}, with at most"
                f" {PERCENT_DIGITS} fractional digits (got {text!r})"
            )
    elif kind is AlertKind.CONSUMED and value <= 0:
        raise AlertRuleError("a CONSUMED threshold is above 0")
    return value


class AlertRuleService:
    def __init__(
        self, store: AlertRuleStore, features: FeatureStore, resolution: ResolutionCache
    ) -> None:
        self.store = store
        self.features = features
        self.resolution = resolution

    @classmethod
    def over(
        cls, sessions: sessionmaker[Session], features: FeatureStore, resolution: ResolutionCache
    ) -> AlertRuleService:
        return cls(AlertRuleStore(sessions), features, resolution)

    def create(self, spec: AlertRuleSpec, now: datetime) -> StoredRule:
        scopes = [v for v in (spec.feature, spec.customer_id, spec.entitlement_id) if v is not None]
        if len(scopes) > 1:
            raise AlertRuleError(
                "a rule has one scope: feature, customer_id or entitlement_id (none: the org)"
            )
        threshold = checked_threshold(spec.kind, spec.threshold)
        if spec.feature is not None:
            self.features.by_key(spec.org, spec.feature)  # NotFoundError: 404
        before = self.store.count_live(spec.org)
        if before >= MAX_RULES_PER_ORG:
            raise AlertRuleError(f"an org holds at most {MAX_RULES_PER_ORG} alert rules")
        rule = self.store.create(
            StoredRule(
                id=new_rule_id(),
                org=spec.org,
                feature=spec.feature,
                customer_id=spec.customer_id,
                entitlement_id=spec.entitlement_id,
                kind=spec.kind,
                threshold=threshold,
                created_at=now,
            )
        )
        self._reach_ingest(rule, whole_org=before == 0, now=now)
        return rule

    def rules(self, org: str) -> list[StoredRule]:
        return self.store.live(org)

    def get(self, org: str, rule_id: str) -> StoredRule:
        return self.store.get(org, rule_id)

    def delete(self, org: str, rule_id: str, now: datetime) -> StoredRule:
        rule = self.store.delete(org, rule_id, now)
        self._reach_ingest(rule, whole_org=self.store.count_live(org) == 0, now=now)
        return rule

    def _reach_ingest(self, rule: StoredRule, *, whole_org: bool, now: datetime) -> None:
        """Rewrite the resolution entries the change alters (after it committed)."""
        reach = StoredRule(rule.id, rule.org, None, None, None, rule.kind, rule.threshold, now)
        entries: Sequence[tuple[str, str, str]] = self.store.reach(rule if not whole_org else reach)
        for start in range(0, len(entries), _REFRESH_CHUNK):
            self.resolution.refresh(entries[start : start + _REFRESH_CHUNK], now)
