"""The audit trail of status steps (``entitlement_transitions``), the usage periods
renewals and months open, and a notification per step, written in the
transaction that moves the entitlement (``meterd.storage.transitions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from meterd.core.ids import uuid7
from meterd.core.lifecycle import Transition
from meterd.core.notifications import (
    NewNotification,
    catch_up_data,
    envelope,
    transition_data,
    transition_notification_id,
    transition_type,
)
from meterd.storage.database import bulk_insert, insert_ignoring_duplicates
from meterd.storage.due_entitlements import Chain, DueEntitlement
from meterd.storage.models import EntitlementTransition, UsagePeriod
from meterd.storage.notifications import insert_notifications


def record_steps(s: Session, moved: Sequence[Chain], job_run_id: str, now: datetime) -> None:
    """The audit rows, their notifications, and the periods renewals and months open
    (a summary step opens none).

    Every status change is notified on its own, also a renewal that changes the
    status (a renewing grant recorded EXPIRED or GRACE reopens by renewing; a
    summary step says how many terms it stands for). The renewals (or months) that
    keep the status are notified once a chain: a single one as itself, several (a
    catch-up: a backdated grant, missed job runs, a resume) as one notification of
    the last, whose ``data`` says how many terms it stands for
    (``meterd.core.notifications.catch_up_data``). So a backdated grant sends one
    notification for its history, not one per term.
    """
    periods = [
        {
            "id": uuid7(),
            "org_id": due.org_id,
            "entitlement_id": due.id,
            "period_start": step.at,
            "period_end": step.renewal_end or step.month_end,
            "quantity": due.renewal_quantity
            if step.renewal_end is not None and due.renewal_quantity is not None
            else due.quantity,
            "consumed": Decimal(0),
            "updated_at": now,
        }
        for due, chain in moved
        for step in chain
        if step.opens_period
    ]
    audit: list[dict[str, Any]] = []
    notifications: list[NewNotification] = []
    for due, chain in moved:
        renewed: list[tuple[dict[str, Any], Transition]] = []
        for step in chain:
            row = {
                "id": uuid7(),
                "org_id": due.org_id,
                "entitlement_id": due.id,
                "from_status": step.from_status.value,
                "to_status": step.to_status.value,
                "at": step.at,
                "recorded_at": now,
                "reason": step.reason,
                "job_run_id": job_run_id,
            }
            audit.append(row)
            if step.opens_term and step.from_status is step.to_status:
                renewed.append((row, step))
            else:  # a status change, also one that renews (a lapsed grant reopened)
                notifications.append(_renewals_notification([(row, step)], due))
        if renewed:
            notifications.append(_renewals_notification(renewed, due))
    # A month's period may exist already: a flush opens it on first usage.
    insert_ignoring_duplicates(s, UsagePeriod, periods, ["entitlement_id", "period_start"])
    bulk_insert(s, EntitlementTransition, audit)
    insert_notifications(s, notifications, now, fresh=True)


def _renewals_notification(
    renewed: Sequence[tuple[dict[str, Any], Transition]], due: DueEntitlement
) -> NewNotification:
    """One notification for the renewals (or months) one chain recorded: the last
    one's, with the catch-up in its data when there were several (or it is a
    summary). A step that is not a renewal or a month is notified as itself."""
    last_row, last_step = renewed[-1]
    if len(renewed) == 1 and not last_step.summarised:
        return transition_notification(last_row, due)
    terms = sum(step.summarised or 1 for _, step in renewed)
    summarised = sum(step.summarised for _, step in renewed)
    until = last_step.renewal_end or last_step.month_end
    assert until is not None  # a renewal or a month
    data = catch_up_data(terms=terms, summarised=summarised, first_at=renewed[0][1].at, until=until)
    return transition_notification(last_row, due, extra=data)


def transition_notification(
    row: dict[str, Any], due: DueEntitlement, *, extra: dict[str, Any] | None = None
) -> NewNotification:
    """The notification of one audit row (as inserted into entitlement_transitions);
    ``extra``: more fields for its ``data``."""
    data = transition_data(row["from_status"], row["to_status"], row["reason"], row["job_run_id"])
    return envelope(
        notification_id=transition_notification_id(row["id"]),
        kind=transition_type(row["from_status"], row["to_status"], row["reason"]),
        org=row["org_id"],
        customer_id=due.customer_id,
        feature=due.feature,
        entitlement_id=due.id,
        occurred_at=row["at"],
        data={**data, **(extra or {})},
    )
