"""The ``meterd`` command line (Typer). Each command parses, calls a service, prints."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import kombu.exceptions
import kombu.pools
import redis
import typer
import uvicorn
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from meterd import embedded, usage_chart
from meterd.celery_config import QUEUES, celery_command, create_app
from meterd.config import SettingsError, get_settings, redact_url
from meterd.demo import DemoPlan, run_demo
from meterd.dev import check_port_free, run_dev
from meterd.domain import Aggregation, BillingType, ContractMode, FeatureType
from meterd.errors import (
    ConflictError,
    InvalidError,
    MeterdError,
    NotFoundError,
    UnavailableError,
)
from meterd.lifecycle import OperatorAction
from meterd.migrate import schema_problem, upgrade
from meterd.ops import gather
from meterd.producer import publish_batches, stamp_receive_time
from meterd.quantity import parse_decimal_text
from meterd.runtime import STORE_ERRORS, Runtime, reset_runtime
from meterd.runtime import get_runtime as shared_runtime
from meterd.services.api_keys import KeyInfo, Permission
from meterd.services.catalog import NewEntitlement
from meterd.services.usage_report import Window, parse_group_by, time_zone
from meterd.storage.redis_safety import check_redis, enforce
from meterd.timeutil import as_utc, isoformat, isoformat_or_none, isoformat_seconds, utcnow
from meterd.wire_json import install_json_codec, plain_loads

app = typer.Typer(
    help="meterd: asynchronous usage metering for entitlements.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations.", no_args_is_help=True)
feature_app = typer.Typer(help="Features.", no_args_is_help=True)
entitlement_app = typer.Typer(help="Entitlements.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: events that were not counted.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed, scoped to one org).", no_args_is_help=True)
embedded_app = typer.Typer(
    help="The embedded Redis of the default settings (embedded://DIR).", no_args_is_help=True
)
lifecycle_app = typer.Typer(
    help="The lifecycle job: record what the clock made due.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(org_app, name="org")
app.add_typer(feature_app, name="feature")
app.add_typer(entitlement_app, name="entitlement")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(embedded_app, name="embedded")

console = Console()

#: Database URLs this process found holding meterd's schema.
_databases_ready: set[str] = set()


def get_runtime() -> Runtime:
    """This process's runtime, once its database is known to hold meterd's schema: a
    command run in the wrong directory (the default ``sqlite:///meterd.db`` is relative
    to it) says where it looked and what to do, instead of creating an empty database
    and failing on "no such table"."""
    url = get_settings().database_url
    if url not in _databases_ready:
        problem = schema_problem(url)
        if problem is not None:
            raise ConflictError(problem)
        _databases_ready.add(url)
    return shared_runtime()


def _when(value: str | None, default: datetime | None) -> datetime | None:
    if value is None:
        return default
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date-time") from None


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a UUID") from None


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the database schema (Alembic)."""
    url = get_settings().database_url
    upgrade(url, revision)
    console.print(f"database at [bold]{escape(redact_url(url))}[/bold] is at revision {revision}")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("-c", "--concurrency")] = 2,
    queues: Annotated[str, typer.Option("-Q", "--queues")] = ",".join(QUEUES),
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "info",
    hostname: Annotated[
        str | None,
        typer.Option(
            "-n", "--hostname", help="Celery node name, e.g. ingest1@%h (unique per worker)"
        ),
    ] = None,
) -> None:
    """Run a Celery worker for the meterd queues (this process becomes
    ``celery -A meterd.worker:app worker``). Two workers on one host need
    different ``--hostname``s: Celery tells nodes apart by name."""
    get_settings()  # bad settings: one line here, not a traceback from celery
    argv = celery_command("worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel)
    _become(argv + (["-n", hostname] if hostname else []))


def _become(argv: list[str]) -> None:
    """Replace this process with ``argv``: signals and the pid are the worker's own."""
    sys.stdout.flush()
    os.execv(argv[0], argv)


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "info",
    redbeat: Annotated[
        bool, typer.Option(help="RedBeat scheduler: a lock in Redis makes a second beat wait")
    ] = False,
) -> None:
    """Run Celery beat: flush, lifecycle and notification dispatch on schedule."""
    get_settings()  # bad settings: one line here, not a traceback from celery
    argv = ["beat", "-l", loglevel]
    if redbeat:
        argv += ["-S", "redbeat.RedBeatScheduler"]
    _become(celery_command(*argv))


@app.command()
def flush() -> None:
    """Move every pending count into the database now."""
    reports = get_runtime().flush.flush_all(utcnow(), max_batches=1000)
    periods = sum(r.periods for r in reports)
    console.print(f"flushed {len(reports)} batch(es), {periods} period update(s)")


@app.command()
def publish(
    path: Annotated[
        Path | None, typer.Argument(help="JSON file (event or array); - for stdin")
    ] = None,
    batch_size: int = 500,
) -> None:
    """Publish CloudEvents usage events to meterd.ingest_batch in batches. An event
    without ``time`` is stamped with the time the file was read (RFC 3339, UTC)."""
    payload = _read_json(path)
    received_at = utcnow()
    events = stamp_receive_time(payload if isinstance(payload, list) else [payload], received_at)
    install_json_codec(plain_decoding=False)  # each number published as the file wrote it
    with create_app(get_settings()) as celery_app:
        messages = publish_batches(celery_app, events, batch_size)
    console.print(f"published {len(events)} event(s) in {messages} message(s)")


def _read_json(path: Path | None) -> Any:
    """The JSON document in ``path`` (stdin for None or ``-``); a file that cannot be
    read or is not JSON is refused with one line."""
    from_stdin = path is None or str(path) == "-"
    name = "stdin" if from_stdin else str(path)
    try:
        text = sys.stdin.read() if from_stdin or path is None else path.read_text("utf-8")
        return plain_loads(text)  # numbers with their literal text, as the API reads them
    except FileNotFoundError:
        raise NotFoundError("events file", name) from None
    except OSError as exc:
        raise InvalidError(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # UnreadableJson, UnicodeDecodeError
        raise InvalidError(f"{name} is not JSON: {exc}") from None


@org_app.command("create")
def org_create(org: str, name: str | None = None) -> None:
    get_runtime().catalog.create_org(org, name, utcnow())
    console.print(f"organisation {org} ready")


_INTEGER = re.compile(r"^-?[0-9]{1,16}$")


def _dimensions(pairs: list[str] | None, option: str) -> dict[str, Any] | None:
    """``key=value`` pairs as dimension filters (checked by the catalog): a value is
    an integer if it reads as one, a boolean for ``true``/``false``, else text."""
    if not pairs:
        return None
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidError(f"{option} {pair[:80]!r} must be key=value, e.g. model=gpt-4o")
        if key in found:
            raise InvalidError(f"{option} names {key[:80]!r} twice")
        value: Any = text
        if _INTEGER.match(text):
            value = int(text)
        elif text in ("true", "false"):
            value = text == "true"
        found[key] = value
    return found


_MeterFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--meter-filter",
        help="count only raw events whose data has this value: key=value (repeatable)",
    ),
]


@feature_app.command("create")
def feature_create(
    org: str,
    key: str,
    name: str | None = None,
    units: str = "",
    type: FeatureType = FeatureType.FEATURE,
    scale: Annotated[
        int, typer.Option(help="fractional digits counted, 0-6; fixed at creation")
    ] = 6,
    aggregation: Annotated[
        str,
        typer.Option(help=f"one of {', '.join(a.value for a in Aggregation)}; fixed at creation"),
    ] = Aggregation.SUM.value,
    event_type: Annotated[
        str | None,
        typer.Option(help="the CloudEvents type of raw events metered (default: meterd.usage)"),
    ] = None,
    value_property: Annotated[
        str | None,
        typer.Option(help="the data property holding the value, e.g. usage.input_tokens"),
    ] = None,
    meter_filter: _MeterFilter = None,
) -> None:
    """Create a feature; how it is metered (scale, aggregation, event type, value
    property, meter filters) is fixed at creation."""
    feature = get_runtime().catalog.create_feature(
        org,
        key,
        now=utcnow(),
        name=name,
        units=units,
        type=type,
        scale=scale,
        aggregation=aggregation,
        event_type=event_type,
        value_property=value_property,
        meter_filters=_dimensions(meter_filter, "--meter-filter"),
    )
    console.print(f"feature {feature.key} ({feature.id}) created")


@entitlement_app.command("create")
def entitlement_create(
    org: str,
    customer: str,
    feature: str,
    quantity: Annotated[
        str | None, typer.Option(help="a decimal like 10 or 0.5; omit for unlimited")
    ] = None,
    starts: Annotated[str | None, typer.Option(help="ISO 8601; default now")] = None,
    ends: Annotated[str | None, typer.Option(help="ISO 8601; default open-ended")] = None,
    billing_type: BillingType = BillingType.PRE_PAID,
    contract_mode: ContractMode = ContractMode.PRODUCTION,
    priority: int = 0,
    grace_days: int = 0,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="dimension: only usage whose data has this value counts on it:"
            " key=value (repeatable); fixed at creation",
        ),
    ] = None,
) -> None:
    granted = None if quantity is None else parse_decimal_text(quantity)
    now = utcnow()
    ent = get_runtime().catalog.create_entitlement(
        NewEntitlement(
            org=org,
            customer_id=customer,
            feature=feature,
            quantity=granted,
            starts_at=_when(starts, now) or now,
            ends_at=_when(ends, None),
            billing_type=billing_type,
            contract_mode=contract_mode,
            priority=priority,
            grace=timedelta(days=grace_days) if grace_days else None,
            filters=_dimensions(filter, "--filter"),
        ),
        now,
    )
    console.print(f"entitlement #{ent.number} {ent.id} created ({ent.status})")


def _change_status(entitlement_id: str, action: str, reason: str, version: int | None) -> None:
    ent = get_runtime().catalog.change_status(
        _uuid(entitlement_id),
        OperatorAction(action),
        utcnow(),
        reason=reason,
        expected_version=version,
    )
    console.print(f"entitlement {ent.id} is {ent.status} (row_version {ent.row_version})")


_Reason = Annotated[str, typer.Option(help="recorded in the audit trail")]
_Version = Annotated[
    int | None, typer.Option("--version", help="refuse unless the row is at this row_version")
]


@entitlement_app.command("suspend")
def entitlement_suspend(
    entitlement_id: str, reason: _Reason = "", version: _Version = None
) -> None:
    """Suspend: usage is refused (dead-lettered as suspended) until resumed."""
    _change_status(entitlement_id, "suspend", reason, version)


@entitlement_app.command("resume")
def entitlement_resume(entitlement_id: str, reason: _Reason = "", version: _Version = None) -> None:
    """Resume a suspended entitlement; the lifecycle job catches up what fell due meanwhile."""
    _change_status(entitlement_id, "resume", reason, version)


@entitlement_app.command("terminate")
def entitlement_terminate(
    entitlement_id: str, reason: _Reason = "", version: _Version = None
) -> None:
    """Terminate (final): no more usage counts on it."""
    _change_status(entitlement_id, "terminate", reason, version)


@lifecycle_app.command("run")
def lifecycle_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what is due; apply and record nothing")
    ] = False,
    show: Annotated[int, typer.Option(help="transitions listed at most")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the lifecycle job now: record every transition that fell due (activation,
    grace, expiry, renewals, months), with its audit row, as beat would."""
    report = get_runtime().lifecycle.advance_all(utcnow(), dry_run=dry_run)
    steps = [
        {
            "entitlement_id": str(due.id),
            "customer": due.customer_id,
            "feature": due.feature,
            "from": step.from_status.value,
            "to": step.to_status.value,
            "at": step.at.isoformat(),
            "reason": step.reason,
        }
        for due, chain in report.applied
        for step in chain
    ]
    if as_json:
        summary = {"dry_run": dry_run, "transitions": report.transitions, "steps": steps[:show]}
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title="would apply" if dry_run else "applied")
    for column in ("entitlement_id", "customer", "feature", "from", "to", "at", "reason"):
        table.add_column(column)
    for row in steps[:show]:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    verb = "would record" if dry_run else "recorded"
    console.print(
        f"{verb} {report.transitions} transition(s) of {report.entitlements} entitlement(s)"
        + (f"; {len(steps) - show} not listed" if len(steps) > show else "")
    )


@org_app.command("webhook")
def org_webhook(
    org: str,
    url: Annotated[str | None, typer.Argument(help="omit to remove the webhook")] = None,
    secret: Annotated[str | None, typer.Option(help="HMAC key for Meterd-Signature")] = None,
) -> None:
    """Set where the org's notifications are POSTed (threshold crossings, transitions)."""
    if url is not None and not url.startswith(("http://", "https://")):
        raise typer.BadParameter("the webhook URL must start with http:// or https://")
    if not get_runtime().notification_store.set_webhook(org, url, secret):
        console.print(f"[red]no organisation {org}[/red]")
        raise typer.Exit(1)
    console.print(f"webhook of {org}: {escape(redact_url(url or 'none'))}")


_PERMISSIONS_HELP = ", ".join(p.value for p in Permission) + "; repeat for several"


def _limit_text(key: KeyInfo) -> str:
    if key.limit is None:
        return "unlimited"
    own = "" if key.rate_limit is None and key.rate_burst is None else " (own)"
    return f"{key.limit.rate}/s burst {key.limit.burst}{own}"


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="the org the key acts for")],
    permission: Annotated[list[str], typer.Option(help=_PERMISSIONS_HELP)],
    name: str = "",
    expires_at: Annotated[
        str | None, typer.Option(help="RFC 3339; the key is refused after it")
    ] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option(help="requests a second; 0: unlimited; default METERD_API_RATE_LIMIT"),
    ] = None,
    burst: Annotated[int | None, typer.Option(help="bucket size; default twice the rate")] = None,
) -> None:
    """Issue an API key. The key is printed once; only its hash is stored."""
    try:
        permissions = [Permission(p) for p in permission]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    token, row = get_runtime().api_keys.create(
        org,
        permissions,
        utcnow(),
        name=name,
        expires_at=_when(expires_at, None),
        rate_limit=rate_limit,
        rate_burst=burst,
    )
    console.print(f"key {row.id} for {org} ({row.permissions}):")
    print(token)


@keys_app.command("list")
def keys_list(org: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The org's keys: never their secrets. Last use is written about once a minute."""
    keys = get_runtime().api_keys.list(org)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        **dataclasses.asdict(k),
                        **{
                            f: isoformat_or_none(getattr(k, f))
                            for f in ("created_at", "last_used_at", "expires_at", "revoked_at")
                        },
                    }
                    for k in keys
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"API keys of {org}")
    for column in ("id", "name", "status", "permissions", "last used", "expires", "limit"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.id,
            escape(k.name),
            k.status,
            " ".join(k.permissions),
            isoformat_seconds(k.last_used_at) or "never",
            isoformat_seconds(k.expires_at) or "never",
            _limit_text(k),
        )
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    old_valid_until: Annotated[
        str, typer.Option(help="RFC 3339: the old key keeps working until then")
    ],
    expires_at: Annotated[str | None, typer.Option(help="the new key's expiry")] = None,
) -> None:
    """A new key with the same org, name, permissions and limits; the old one keeps
    working until --old-valid-until. The new key is printed once."""
    until = _when(old_valid_until, None)
    assert until is not None
    token, row = get_runtime().api_keys.rotate(
        key_id, until, utcnow(), expires_at=_when(expires_at, None)
    )
    console.print(f"key {row.id} replaces {key_id} (which works until {isoformat(until)}):")
    print(token)


@keys_app.command("limit")
def keys_limit(
    key_id: str,
    rate_limit: Annotated[
        int | None, typer.Option(help="requests a second; 0: unlimited; omit: the default")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="bucket size; omit: the default")] = None,
) -> None:
    """Set a key's own rate limit (other API processes apply it within seconds)."""
    get_runtime().api_keys.set_limits(key_id, rate_limit, burst)
    console.print(_limit_text(get_runtime().api_keys.get(key_id)) + f" for key {key_id}")


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key (it stops working within seconds)."""
    if not get_runtime().api_keys.revoke(key_id, utcnow()):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"key {key_id} revoked")


@app.command()
def dev(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Worker, beat and API in one process tree on the embedded default; Ctrl-C
    stops them and flushes everything to the database."""
    raise typer.Exit(run_dev(get_settings(), host, port, console))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until Ctrl-C")] = False,
    sample: Annotated[float, typer.Option(help="seconds to measure events/s over")] = 1.0,
) -> None:
    """Queues (ready and unacked), flush lag, dead letters, events/s, workers alive."""
    with create_app(get_settings()) as celery_app:
        _show_status(celery_app, as_json=as_json, watch=watch, sample=sample)


def _show_status(celery_app: Any, *, as_json: bool, watch: bool, sample: float) -> None:
    rt = get_runtime()
    if as_json:
        typer.echo(json.dumps(gather(rt, celery_app, sample_seconds=sample).as_json(), indent=2))
        return
    if not watch:
        console.print(_status_view(gather(rt, celery_app, sample_seconds=sample)))
        return
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                live.update(_status_view(gather(rt, celery_app, sample_seconds=sample)))
                live.refresh()
        except KeyboardInterrupt:
            pass


def _status_view(st: Any) -> Any:
    queues = Table(title="queues")
    for column in ("queue", "ready", "unacked"):
        queues.add_column(column, justify="right" if column != "queue" else "left")
    for q in st.queues:
        queues.add_row(q.queue, _n(q.ready), _n(q.unacked))
    lag = "all flushed" if st.flush_lag_seconds is None else f"{st.flush_lag_seconds:.1f} s"
    rate = "-" if st.events_per_second is None else f"{st.events_per_second:,.0f}"
    workers = "unknown" if st.workers is None else f"{len(st.workers)} " + ", ".join(st.workers)
    summary = Table(show_header=False, title="meterd")
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("flush lag", lag)
    summary.add_row("events/s (accepted)", rate)
    summary.add_row("workers alive", workers)
    for outcome, n in sorted(st.events_total.items()):
        summary.add_row(f"events {outcome}", f"{n:,}")
    for reason, n in sorted(st.dead_letters.items()):
        summary.add_row(f"dead letters {reason}", f"{n:,}")
    store = st.storage
    summary.add_row(
        "dedupe markers (hot window)", f"{_n(store.markers)} in {_n(store.marker_sets)} sets"
    )
    summary.add_row("dedupe marker memory", _bytes(store.marker_bytes))
    summary.add_row("events waiting for the log", _n(store.waiting_events))
    summary.add_row("event log rows", _n(store.log_rows))
    summary.add_row("event log partitions", _n(store.log_partitions))
    summary.add_row("event log oldest", store.log_oldest or "-")
    summary.add_row("event log on disk", _bytes(store.log_bytes))
    safety = st.redis_safety
    colour = "green" if safety.state == "safe" else "red"
    summary.add_row("redis safety", f"[{colour}]{safety.state}[/{colour}] ({safety.source or '-'})")
    for problem in safety.problems:
        summary.add_row(f"[{colour}]redis unsafe[/{colour}]", escape(str(problem)))
    for warning in safety.warnings:
        summary.add_row("[yellow]redis warning[/yellow]", escape(warning))
    for error in st.errors:
        summary.add_row("[red]error[/red]", error)
    return Group(summary, queues)


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return f"{value} B"  # pragma: no cover


@app.command()
def usage(
    org: str,
    customer: Annotated[str | None, typer.Argument(help="all customers when left out")] = None,
    feature: Annotated[str | None, typer.Option(help="one feature (default: all)")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="RFC 3339; default: 30 days ago")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="RFC 3339; default: now")] = None,
    window: Annotated[str, typer.Option(help="HOUR, DAY or MONTH")] = "DAY",
    tz: Annotated[str, typer.Option(help="IANA time zone of the windows")] = "UTC",
    group_by: Annotated[
        str, typer.Option("--group-by", help="comma-separated: customer, feature, entitlement")
    ] = "",
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout, for spreadsheets")] = False,
) -> None:
    """Usage over time from the event log: a bar per window, exact quantities."""
    zone = time_zone(tz)
    groups = parse_group_by(group_by)
    try:
        kind = Window(window.upper())
    except ValueError:
        raise InvalidError(f"window: {window!r} is not one of HOUR, DAY, MONTH") from None
    now = utcnow()
    rows = get_runtime().usage_report.usage(
        org,
        customer=customer,
        feature=feature,
        start=_when(start, now - timedelta(days=30)) or now,
        end=_when(end, now) or now,
        window=kind,
        tz=zone,
        group_by=groups,
    )
    if as_csv:
        typer.echo(usage_chart.to_csv(rows), nl=False)
        return
    if not rows:
        console.print("no usage in that range")
        return
    for line in usage_chart.chart(rows):
        typer.echo(line)  # not through rich: a chart line must never wrap


def _terminated(_signum: int, _frame: object) -> None:
    """SIGTERM reached the API process: stop as on Ctrl-C."""
    raise KeyboardInterrupt


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the HTTP API (OpenAPI at /docs); refuses an unsafe counter Redis. Ctrl-C or
    SIGTERM stop it gracefully (exit 0), and with it the embedded Redis it started."""
    get_settings()  # bad settings first, then the port: each in one line
    check_port_free(host, port)
    # uvicorn shuts down on SIGINT/SIGTERM, then raises the signal again: SIGTERM's
    # default action would end the process before ``main`` stops the embedded Redis.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with contextlib.suppress(*STORE_ERRORS):  # not answering yet: /readyz will say
            rt = get_runtime()  # the app checks again at start (and warns if allowed)
            report = check_redis(rt.redis, operator_verified=rt.settings.redis_safety_verified)
            enforce(report, allow_unsafe=rt.settings.unsafe_redis)  # one-line error, exit 2
        uvicorn.run(
            "meterd.api.app:create_app", factory=True, host=host, port=port, workers=workers
        )
    except KeyboardInterrupt:
        pass  # uvicorn has stopped serving; ``main`` stops what this process started
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def balance(
    org: str, customer: str, feature: str, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Real-time consumption: flushed + pending, per entitlement."""
    balances = get_runtime().balance.balances(org, customer, feature, utcnow())
    rows = [
        {
            "entitlement_id": str(b.entitlement_id),
            "period_start": b.period_start.isoformat(),
            "quantity": None if b.quantity is None else str(b.quantity),
            "consumed": str(b.consumed),
            "flushed": str(b.flushed),
            "pending": str(b.pending),
            "remaining": None if b.remaining is None else str(b.remaining),
            "overage": str(b.overage),
            "state": b.state.value,
        }
        for b in balances
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{org} / {customer} / {feature}")
    for column in ("entitlement_id", "quantity", "consumed", "pending", "remaining", "overage"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                str(row[c])
                for c in (
                    "entitlement_id",
                    "quantity",
                    "consumed",
                    "pending",
                    "remaining",
                    "overage",
                )
            )
        )
    console.print(table)


_Since = Annotated[str | None, typer.Option(help="received at or after (ISO 8601)")]
_Until = Annotated[str | None, typer.Option(help="received before (ISO 8601)")]


def _letter_row(dl: Any) -> dict[str, Any]:
    return {
        "id": str(dl.id),
        "reason": dl.reason,
        "detail": dl.detail,
        "org": dl.org_id,
        "source": dl.source,
        "event_id": dl.event_id,
        "received_at": dl.received_at.isoformat(),
        "replayed_at": dl.replayed_at.isoformat() if dl.replayed_at else None,
        "replay_outcome": dl.replay_outcome,
        "payload": json.loads(dl.payload),
    }


@dlq_app.command("list")
def dlq_list(
    reason: str | None = None,
    org: str | None = None,
    since: _Since = None,
    until: _Until = None,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters not yet replayed, oldest first."""
    letters = get_runtime().dead_letters.find(
        reason=reason, org_id=org, since=_when(since, None), until=_when(until, None), limit=limit
    )
    rows = [_letter_row(dl) for dl in letters]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="dead letters")
    for column in ("id", "received_at", "reason", "org", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"], row["received_at"], row["reason"], str(row["org"]), row["detail"])
    console.print(table)


@dlq_app.command("show")
def dlq_show(dead_letter_id: str) -> None:
    """One dead letter in full: reason, detail, the original payload, replay state."""
    letter = get_runtime().dead_letters.get(_uuid(dead_letter_id))
    if letter is None:
        console.print(f"[red]no dead letter {dead_letter_id}[/red]")
        raise typer.Exit(1)
    typer.echo(json.dumps(_letter_row(letter), indent=2))


@dlq_app.command("replay")
def dlq_replay(
    reason: str | None = None,
    org: str | None = None,
    since: _Since = None,
    until: _Until = None,
    limit: int = 1000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Feed dead letters through ingest again (idempotent: nothing counts twice)."""
    report = get_runtime().replay.replay(
        now=utcnow(),
        reason=reason,
        org=org,
        since=_when(since, None),
        until=_when(until, None),
        limit=limit,
    )
    summary = {
        "replayed": report.replayed,
        "still_dead": report.still_dead,
        "outcomes": dict(report.outcomes),
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(
        f"replayed {report.replayed} dead letter(s): {dict(report.outcomes)}; "
        f"{report.still_dead} failed again for the same reason and stay listed"
    )


@dlq_app.command("purge")
def dlq_purge(
    reason: str | None = None,
    org: str | None = None,
    since: _Since = None,
    until: _Until = None,
    include_unreplayed: Annotated[
        bool, typer.Option(help="also delete letters never replayed: their events are lost")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="really delete")] = False,
) -> None:
    """Delete dead letters (by default only those already replayed)."""
    store = get_runtime().dead_letters
    filters: dict[str, Any] = {
        "reason": reason,
        "org_id": org,
        "since": _when(since, None),
        "until": _when(until, None),
        "replayed": None if include_unreplayed else True,
    }
    matching = store.count(**filters)
    if not yes:
        console.print(f"{matching} dead letter(s) match; run again with --yes to delete them")
        raise typer.Exit(1)
    console.print(f"purged {store.purge(**filters)} dead letter(s)")


@app.command()
def demo(
    customers: int = 20,
    events: int = 20_000,
    batch_size: int = 500,
) -> None:
    """Create sample data and push a stream of events through a real worker."""
    settings = get_settings()
    upgrade(settings.database_url)
    console.print(
        f"[bold]meterd demo[/bold]: database {escape(redact_url(settings.database_url))}, "
        f"redis {escape(redact_url(settings.redis_url))}"
    )
    ok = run_demo(
        get_runtime(),
        DemoPlan(customers=customers, events=events, batch_size=batch_size),
        console,
    )
    # The embedded Redis: stopped on the way out only if this demo started it (``main``);
    # one `meterd dev` started stays up for dev.
    raise typer.Exit(0 if ok else 1)


def _embedded_url() -> str:
    settings = get_settings()
    if not settings.is_embedded_redis:
        raise InvalidError(
            f"METERD_REDIS_URL is {redact_url(settings.redis_url)!r}, not the embedded server"
        )
    return settings.redis_url


@embedded_app.command("status")
def embedded_status() -> None:
    """Whether the embedded redis-server runs, where, and how many clients it has."""
    url = _embedded_url()
    where = embedded.embedded_dir(url)
    if not embedded.running(url):
        console.print(f"not running ({where})", soft_wrap=True)
        return
    console.print(
        f"running ({where}): {embedded.clients(url)} client(s) connected; {_owner_text(url)}",
        soft_wrap=True,
    )


def _owner_text(url: str) -> str:
    starter = embedded.owner(url)
    if starter is None:
        return "no starter recorded: the next meterd command done with it stops it"
    who = f"started by {starter.command or 'a process'} (pid {starter.pid})"
    if starter.alive():
        return f"{who}, which stops it when it ends"
    return f"{who}, which is gone: the next meterd command done with it stops it"


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded redis-server (its AOF keeps the counts for the next start)."""
    url = _embedded_url()
    if not embedded.running(url):
        console.print("not running")
        return
    starter = embedded.owner(url)
    embedded.stop(url)
    if embedded.running(url):
        console.print("still running: see redis.log")
        return
    console.print("stopped")
    if starter is not None and starter.alive() and not starter.is_this_process():
        console.print(
            f"{starter.command or 'the process'} (pid {starter.pid}) started it and still runs:"
            " it cannot count until it is restarted",
            soft_wrap=True,
        )


#: Exit status of a command refused by meterd (not found, conflict, invalid).
EXIT_REFUSED = 2
#: Exit status when a store did not answer: the same command may work later
#: (EX_TEMPFAIL of sysexits.h).
EXIT_UNAVAILABLE = 75


#: What a driver raises when a store or the broker did not answer: the command may
#: work later, so it exits like ``UnavailableError``.
UNANSWERED_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, kombu.exceptions.OperationalError)


def unanswered_message(exc: Exception) -> str:
    """One line: which store, whether it did not answer (down, unreachable) or
    answered with an error, and the first line of the driver's own message."""
    detail: BaseException = exc
    if isinstance(exc, DBAPIError):
        store, detail = "the database", exc.orig if exc.orig is not None else exc
        answered = not isinstance(exc, (OperationalError, InterfaceError))
    elif isinstance(exc, redis.RedisError):
        store = "Redis"
        answered = not isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
    else:
        store, answered = "the broker", False
    first_line = next((line.strip() for line in str(detail).splitlines() if line.strip()), "")
    reason = first_line[:200] or type(detail).__name__
    return f"{store} {'failed' if answered else 'did not answer'}: {reason}"


def _print_error(message: str) -> None:
    """The error as one line, whatever the terminal's width (no markup in the text), with
    the password of any URL in it masked (a driver's message may quote its URL)."""
    console.print(f"[red]error:[/red] {escape(redact_url(message))}", soft_wrap=True)


def _release_embedded_redis() -> None:
    """Leave no server behind: stop the embedded Redis if this command started it (or
    used one whose starter is gone) and no other process uses it, and say so when it
    keeps running. A server another live process started (`meterd dev`) is left alone."""
    try:
        settings = get_settings()
    except SettingsError:  # settings that do not parse: nothing was started
        return
    url = settings.redis_url
    if not settings.is_embedded_redis or not embedded.used_here(url):
        return
    ours = embedded.ours_to_stop(url)  # started here, or its starter is gone
    reset_runtime()  # our own connections are not "another process"
    kombu.pools.reset()  # type: ignore[no-untyped-call]  # nor Celery's pooled broker connections
    if embedded.release(url) and ours:
        console.print(
            f"the embedded redis-server ({embedded.embedded_dir(url)}) keeps running: "
            "other processes use it. The next meterd command done with it stops it, "
            "or `meterd embedded stop`.",
            soft_wrap=True,
        )


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        for problem in exc.problems:
            _print_error(problem)
        sys.exit(EXIT_REFUSED)
    except MeterdError as exc:
        _print_error(str(exc))
        sys.exit(EXIT_UNAVAILABLE if isinstance(exc, UnavailableError) else EXIT_REFUSED)
    except UNANSWERED_ERRORS as exc:
        _print_error(unanswered_message(exc))
        sys.exit(EXIT_UNAVAILABLE)
    finally:
        _release_embedded_redis()


if __name__ == "__main__":  # pragma: no cover
    main()
