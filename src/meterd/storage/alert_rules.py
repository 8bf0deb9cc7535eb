"""The alert_rules table: an org's thresholds on its entitlements' periods.

A deleted rule keeps its row (``deleted_at`` set): ingest may have recorded a
crossing of it just before, and the flush still names it in that notification.
``applicable`` is what the resolution data carries: the live rules whose scope
takes in an entitlement (all of them: org, feature, customer and entitlement
scopes add up; none overrides another).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.errors import NotFoundError
from meterd.core.notifications import AlertKind
from meterd.core.notifications import AlertRule as JudgedRule
from meterd.storage.models import AlertRule, Entitlement, Feature

#: How many rules an org may hold (each travels in every resolution entry).
MAX_RULES_PER_ORG = 50


@dataclass(frozen=True, slots=True)
class StoredRule:
    id: str
    org: str
    feature: str | None
    customer_id: str | None
    entitlement_id: uuid.UUID | None
    kind: AlertKind
    threshold: Decimal
    created_at: datetime
    deleted_at: datetime | None = None

    @property
    def scope(self) -> str:
        if self.entitlement_id is not None:
            return "entitlement"
        if self.customer_id is not None:
            return "customer"
        if self.feature is not None:
            return "feature"
        return "org"

    @property
    def judged(self) -> JudgedRule:
        return JudgedRule(self.id, self.kind, self.threshold)

    def applies_to(self, entitlement_id: uuid.UUID, customer_id: str, feature: str) -> bool:
        return (
            (self.entitlement_id is None or self.entitlement_id == entitlement_id)
            and (self.customer_id is None or self.customer_id == customer_id)
            and (self.feature is None or self.feature == feature)
        )


def _stored(row: AlertRule) -> StoredRule:
    return StoredRule(
        id=row.id,
        org=row.org_id,
        feature=row.feature,
        customer_id=row.customer_id,
        entitlement_id=row.entitlement_id,
        kind=AlertKind(row.kind),
        threshold=row.threshold,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


def new_rule_id() -> str:
    return "ar_" + secrets.token_hex(5)


def live_rules_of(s: Session, orgs: Iterable[str]) -> dict[str, list[StoredRule]]:
    """The live rules of each org (an org without any is absent), oldest first."""
    wanted = sorted(set(orgs))
    found: dict[str, list[StoredRule]] = {}
    if not wanted:
        return found
    rows = s.scalars(
        select(AlertRule)
        .where(AlertRule.org_id.in_(wanted), AlertRule.deleted_at.is_(None))
        .order_by(AlertRule.created_at, AlertRule.id)
    )
    for row in rows:
        found.setdefault(row.org_id, []).append(_stored(row))
    return found


def rules_by_id(s: Session, ids: Iterable[str]) -> dict[str, StoredRule]:
    """Rules by id, deleted ones included (a crossing recorded before the delete)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {
        row.id: _stored(row) for row in s.scalars(select(AlertRule).where(AlertRule.id.in_(wanted)))
    }


class AlertRuleStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, rule: StoredRule) -> StoredRule:
        """Insert a rule (``NotFoundError``: its entitlement is not the org's)."""
        with self.sessions.begin() as s:
            if rule.entitlement_id is not None:
                ent = s.get(Entitlement, rule.entitlement_id)
                if ent is None or ent.org_id != rule.org:
                    raise NotFoundError("entitlement", rule.entitlement_id)
            s.add(
                AlertRule(
                    id=rule.id,
                    org_id=rule.org,
                    feature=rule.feature,
                    customer_id=rule.customer_id,
                    entitlement_id=rule.entitlement_id,
                    kind=rule.kind.value,
                    threshold=rule.threshold,
                    created_at=rule.created_at,
                )
            )
        return rule

    def count_live(self, org: str) -> int:
        with self.sessions() as s:
            return len(live_rules_of(s, [org]).get(org, []))

    def live(self, org: str) -> list[StoredRule]:
        with self.sessions() as s:
            return live_rules_of(s, [org]).get(org, [])

    def get(self, org: str, rule_id: str) -> StoredRule:
        with self.sessions() as s:
            row = s.get(AlertRule, rule_id)
            if row is None or row.org_id != org or row.deleted_at is not None:
                raise NotFoundError("alert rule", rule_id)
            return _stored(row)

    def delete(self, org: str, rule_id: str, now: datetime) -> StoredRule:
        with self.sessions.begin() as s:
            row = s.get(AlertRule, rule_id, with_for_update=True)
            if row is None or row.org_id != org or row.deleted_at is not None:
                raise NotFoundError("alert rule", rule_id)
            row.deleted_at = now
            return _stored(row)

    def reach(self, rule: StoredRule) -> list[tuple[str, str, str]]:
        """The (org, customer, feature key) resolution entries a rule's scope takes
        in: those of the org's entitlements it applies to (terminated ones too: the
        entry is rewritten from the database whatever it holds)."""
        stmt = (
            select(Entitlement.customer_id, Feature.key)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Entitlement.org_id == rule.org)
            .distinct()
        )
        if rule.entitlement_id is not None:
            stmt = stmt.where(Entitlement.id == rule.entitlement_id)
        if rule.customer_id is not None:
            stmt = stmt.where(Entitlement.customer_id == rule.customer_id)
        if rule.feature is not None:
            stmt = stmt.where(Feature.key == rule.feature)
        with self.sessions() as s:
            return [(rule.org, customer, feature) for customer, feature in s.execute(stmt)]


def applicable(
    rules: Sequence[StoredRule] | None,
    entitlement_id: uuid.UUID,
    customer_id: str,
    feature: str,
    scale: int,
) -> tuple[tuple[str, str, int], ...] | None:
    """What a resolution entry carries of an org's rules (None: the org has none,
    the defaults apply)."""
    if not rules:
        return None
    return tuple(
        r.judged.encoded(scale) for r in rules if r.applies_to(entitlement_id, customer_id, feature)
    )
