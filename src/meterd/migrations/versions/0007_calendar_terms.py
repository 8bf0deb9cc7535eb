"""calendar terms: each entitlement's term and anchor; when it was terminated

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 12:00:00

Existing auto-renewing entitlements keep their anchor (their original start)
and get their term from their plan, else from their first period (whole
calendar months when it is one, e.g. Jan 31 -> Feb 28; else its exact
length). Renewals are computed from the anchor from now on, so terms that
drifted (28-day "months") join the calendar again at their next renewal.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import meterd.storage.models
from meterd.core.terms import Term, TermUnit

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UtcDateTime = meterd.storage.models.UtcDateTime
#: As it stood when this revision was written (the model's constant may change later).
LAPSED_RENEWING_SQL = (
    "status IN ('EXPIRED', 'GRACE') AND auto_renew AND contract_mode <> 'TRIAL' "
    "AND term_anchor IS NOT NULL AND billing_type = 'PRE_PAID'"
)


def upgrade() -> None:
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("term_months", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("term_micros", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("term_anchor", UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("terminated_at", UtcDateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_entitlements_lapsed_renewing",
            ["status"],
            unique=False,
            postgresql_where=sa.text(LAPSED_RENEWING_SQL),
            sqlite_where=sa.text(LAPSED_RENEWING_SQL),
        )
    conn = op.get_bind()
    _terms_of_renewing(conn)
    _terminated_at(conn)


def _terms_of_renewing(conn: sa.Connection) -> None:
    ents = sa.table(
        "entitlements",
        sa.column("id", sa.Uuid()),
        sa.column("plan_id", sa.Uuid()),
        sa.column("auto_renew", sa.Boolean()),
        sa.column("starts_at", UtcDateTime()),
        sa.column("ends_at", UtcDateTime()),
        sa.column("term_months", sa.Integer()),
        sa.column("term_micros", sa.BigInteger()),
        sa.column("term_anchor", UtcDateTime()),
    )
    plans = sa.table(
        "plans",
        sa.column("id", sa.Uuid()),
        sa.column("term_value", sa.Integer()),
        sa.column("term_unit", sa.String()),
    )
    periods = sa.table(
        "usage_periods",
        sa.column("entitlement_id", sa.Uuid()),
        sa.column("period_start", UtcDateTime()),
        sa.column("period_end", UtcDateTime()),
    )
    first_end = (
        sa.select(periods.c.period_end)
        .where(periods.c.entitlement_id == ents.c.id, periods.c.period_start == ents.c.starts_at)
        .scalar_subquery()
    )
    rows = conn.execute(
        sa.select(
            ents.c.id, ents.c.starts_at, ents.c.ends_at, plans.c.term_value, plans.c.term_unit,
            first_end.label("first_end"),
        )
        .select_from(ents.outerjoin(plans, plans.c.id == ents.c.plan_id))
        .where(ents.c.auto_renew.is_(True))
    ).all()  # fmt: skip
    for ent_id, starts_at, ends_at, value, unit, end in rows:
        if value and unit:
            term = Term.of(value, TermUnit(unit))
        elif (end or ends_at) is not None and (end or ends_at) > starts_at:
            term = Term.between(starts_at, end or ends_at)
        else:
            continue  # open-ended: nothing to renew
        conn.execute(
            sa.update(ents)
            .where(ents.c.id == ent_id)
            .values(
                term_months=term.months or None,
                term_micros=term.length // timedelta(microseconds=1) or None,
                term_anchor=starts_at,
            )
        )


def _terminated_at(conn: sa.Connection) -> None:
    ents = sa.table(
        "entitlements",
        sa.column("id", sa.Uuid()),
        sa.column("status", sa.String()),
        sa.column("updated_at", UtcDateTime()),
        sa.column("terminated_at", UtcDateTime()),
    )
    steps = sa.table(
        "entitlement_transitions",
        sa.column("entitlement_id", sa.Uuid()),
        sa.column("to_status", sa.String()),
        sa.column("at", UtcDateTime()),
    )
    when = (
        sa.select(sa.func.min(steps.c.at))
        .where(steps.c.entitlement_id == ents.c.id, steps.c.to_status == "TERMINATED")
        .scalar_subquery()
    )
    conn.execute(
        sa.update(ents)
        .where(ents.c.status == "TERMINATED")
        .values(terminated_at=sa.func.coalesce(when, ents.c.updated_at))
    )


def downgrade() -> None:
    with op.batch_alter_table("entitlements", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_entitlements_lapsed_renewing",
            postgresql_where=sa.text(LAPSED_RENEWING_SQL),
            sqlite_where=sa.text(LAPSED_RENEWING_SQL),
        )
        batch_op.drop_column("terminated_at")
        batch_op.drop_column("term_anchor")
        batch_op.drop_column("term_micros")
        batch_op.drop_column("term_months")
