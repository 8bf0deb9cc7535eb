"""``meterd demo``: sample data and a stream of events through a real worker.

It runs the whole metering loop on whatever the settings point at (by default
the embedded SQLite file and bundled Redis): create a feature, a plan and
entitlements from it, and a token meter (``input_tokens`` and ``output_tokens``
over raw ``llm.request`` events, each event feeding both), start a `celery
worker` subprocess, publish events in batches (with re-sent duplicates), wait
until every event is counted, flush, and show the balances, checking them
against what was sent.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import IntegrityError

from meterd.celery_config import INGEST_TASK, create_app, worker_command
from meterd.config import redact_url
from meterd.core.domain import FeatureType
from meterd.core.errors import NotFoundError
from meterd.core.plans import TermUnit
from meterd.core.quantity import format_quantity, from_micros, to_micros
from meterd.core.timeutil import isoformat, utcnow
from meterd.producer import chunked, usage_event
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement, NewPlan

ORG = "demo"
FEATURE = "api_calls"
PLAN = "demo-monthly"
#: The token meter: each llm.request event feeds both features.
TOKEN_EVENT = "llm.request"
TOKEN_FEATURES = {"input_tokens": "usage.input_tokens", "output_tokens": "usage.output_tokens"}
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")


@dataclass(frozen=True)
class DemoPlan:
    customers: int = 20
    events: int = 20_000
    batch_size: int = 500
    duplicate_share: float = 0.05
    quantity: Decimal = Decimal(2000)
    #: llm.request events (on top of ``events``), and each customer's token grants
    llm_requests: int = 5_000
    tokens: Decimal = Decimal(5_000_000)


def ensure_catalog(rt: Runtime, plan: DemoPlan) -> list[str]:
    now = utcnow()
    rt.catalog.create_org(ORG, "Demo organisation", now)
    try:
        rt.catalog.feature(ORG, FEATURE)
    except NotFoundError:
        rt.catalog.create_feature(ORG, FEATURE, now=now, type=FeatureType.FEATURE, units="calls")
    template = _ensure_plan(rt, plan.quantity)
    for key, path in TOKEN_FEATURES.items():
        try:
            rt.catalog.feature(ORG, key)
        except NotFoundError:
            rt.catalog.create_feature(
                ORG,
                key,
                now=now,
                units="tokens",
                scale=0,
                event_type=TOKEN_EVENT,
                value_property=path,
            )
    customers = [f"customer-{i:03d}" for i in range(plan.customers)]
    for customer in customers:
        if not rt.balance.balances(ORG, customer, FEATURE, now):
            with contextlib.suppress(IntegrityError):  # a concurrent demo created it
                rt.catalog.entitlement_from_plan(
                    ORG, template, customer, now - timedelta(days=1), now
                )
        for key in TOKEN_FEATURES:
            if not rt.balance.balances(ORG, customer, key, now):
                rt.catalog.create_entitlement(
                    NewEntitlement(
                        org=ORG,
                        customer_id=customer,
                        feature=key,
                        quantity=plan.tokens,
                        starts_at=now - timedelta(days=1),
                        ends_at=None,
                    ),
                    now,
                )
    return customers


def _ensure_plan(rt: Runtime, quantity: Decimal) -> uuid.UUID:
    """The demo's plan: the quantity for a month, auto-renewing, in family "demo"."""
    for existing in rt.catalog.plans_of(ORG):
        if existing.key == PLAN:
            return existing.id
    created = rt.catalog.create_plan(
        NewPlan(
            org=ORG,
            key=PLAN,
            feature=FEATURE,
            quantity=quantity,
            display_name="Demo monthly",
            term_value=1,
            term_unit=TermUnit.MONTH,
            auto_renew=True,
            families=("demo",),
        ),
        utcnow(),
    )
    return created.id


def consumed_micros(rt: Runtime, customers: list[str]) -> int:
    now = utcnow()
    return sum(
        to_micros(b.consumed) for c in customers for b in rt.balance.balances(ORG, c, FEATURE, now)
    )


def consumed_tokens(rt: Runtime, customers: list[str]) -> dict[str, Decimal]:
    now = utcnow()
    return {
        key: sum(
            (b.consumed for c in customers for b in rt.balance.balances(ORG, c, key, now)),
            Decimal(0),
        )
        for key in TOKEN_FEATURES
    }


def llm_request(run: str, i: int, customer: str, rng: random.Random) -> dict[str, Any]:
    """A raw event as an LLM gateway would send it: the meters read its token counts."""
    return {
        "specversion": "1.0",
        "id": f"{run}-llm-{i}",
        "source": "meterd-demo-gateway",
        "type": TOKEN_EVENT,
        "subject": customer,
        "org": ORG,
        "time": isoformat(utcnow()),
        "data": {
            "model": rng.choice(MODELS),
            "usage": {
                "input_tokens": rng.randrange(20, 4000),
                "output_tokens": rng.randrange(1, 900),
            },
        },
    }


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            worker_command(),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_demo(rt: Runtime, plan: DemoPlan, console: Console) -> bool:
    """Returns True if the database ended with exactly what was published."""
    customers = ensure_catalog(rt, plan)
    before = consumed_micros(rt, customers)
    tokens_before = consumed_tokens(rt, customers)
    rng = random.Random()
    run = uuid.uuid4().hex[:8]
    events = [
        usage_event(
            org=ORG,
            customer=rng.choice(customers),
            feature=FEATURE,
            quantity=rng.choice(["1", "0.5", "2.25"]),
            event_id=f"{run}-{i}",
            source="meterd-demo",
        )
        for i in range(plan.events)
    ]
    expected = sum(to_micros(Decimal(e["data"]["quantity"])) for e in events)
    requests = [llm_request(run, i, rng.choice(customers), rng) for i in range(plan.llm_requests)]
    expected_tokens = {
        key: sum((Decimal(r["data"]["usage"][path.split(".")[1]]) for r in requests), Decimal(0))
        for key, path in TOKEN_FEATURES.items()
    }
    events += requests
    stream = events + [rng.choice(events) for _ in range(int(len(events) * plan.duplicate_share))]
    rng.shuffle(stream)

    app = create_app(rt.settings)
    log = Path(".meterd") / "demo-worker.log"
    worker = start_worker(log)
    console.print(f"worker started (pid {worker.pid}, log {log})")
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            sent = progress.add_task("publishing events", total=len(stream))
            with app.producer_or_acquire() as producer:
                for batch in chunked(stream, plan.batch_size):
                    app.send_task(INGEST_TASK, args=[batch], producer=producer)
                    progress.advance(sent, len(batch))
            counted = progress.add_task("counting (units)", total=int(from_micros(expected)))
            deadline = time.monotonic() + 300
            while (done := consumed_micros(rt, customers) - before) < expected:
                progress.update(counted, completed=int(from_micros(done)))
                if time.monotonic() > deadline or worker.poll() is not None:
                    console.print("[red]the worker stopped counting[/red]")
                    return False
                time.sleep(0.2)
            progress.update(counted, completed=int(from_micros(expected)))
            deadline = time.monotonic() + 120
            while tokens_counted(rt, customers, tokens_before) != expected_tokens:
                if time.monotonic() > deadline or worker.poll() is not None:
                    console.print("[red]the worker stopped counting tokens[/red]")
                    return False
                time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        app.close()

    rt.flush.flush_all(utcnow(), max_batches=100)
    show_balances(rt, customers, console)
    show_tokens(rt, customers, console)
    total = consumed_micros(rt, customers) - before
    tokens = tokens_counted(rt, customers, tokens_before)
    exact = total == expected and tokens == expected_tokens
    verdict = "[green]exact[/green]" if exact else "[red]MISMATCH[/red]"
    console.print(
        f"published {len(stream):,} events ({len(stream) - len(events):,} re-sent duplicates,"
        f" {plan.llm_requests:,} llm.request events feeding two token meters); counted"
        f" {from_micros(total)} of {from_micros(expected)} {FEATURE} units, "
        + ", ".join(f"{tokens[k]} of {expected_tokens[k]} {k}" for k in TOKEN_FEATURES)
        + f": {verdict}"
    )
    return exact


def tokens_counted(
    rt: Runtime, customers: list[str], before: dict[str, Decimal]
) -> dict[str, Decimal]:
    now_counted = consumed_tokens(rt, customers)
    return {key: now_counted[key] - before[key] for key in TOKEN_FEATURES}


def show_tokens(rt: Runtime, customers: list[str], console: Console) -> None:
    table = Table(title=f"{ORG} / token meter over {TOKEN_EVENT} events")
    for column in ("customer", *(f"{k} used / granted" for k in TOKEN_FEATURES)):
        table.add_column(column, justify="right" if column != "customer" else "left")
    now = utcnow()
    for customer in customers[:5]:
        cells = []
        for key in TOKEN_FEATURES:
            balances = rt.balance.balances(ORG, customer, key, now)
            used = sum((b.consumed for b in balances), Decimal(0))
            granted = sum((b.quantity or Decimal(0) for b in balances), Decimal(0))
            cells.append(f"{format_quantity(used)} / {format_quantity(granted)}")
        table.add_row(customer, *cells)
    console.print(table)


def show_balances(rt: Runtime, customers: list[str], console: Console) -> None:
    where = escape(redact_url(rt.settings.database_url))
    table = Table(title=f"{ORG} / {FEATURE} (flushed to {where})")
    for column in ("customer", "quantity", "consumed", "remaining", "overage"):
        table.add_column(column, justify="right" if column != "customer" else "left")
    now = utcnow()
    for customer in customers[:10]:
        for b in rt.balance.balances(ORG, customer, FEATURE, now):
            table.add_row(
                customer, str(b.quantity), str(b.consumed), str(b.remaining), str(b.overage)
            )
    if len(customers) > 10:
        table.add_row(f"... {len(customers) - 10} more", "", "", "", "")
    console.print(table)
