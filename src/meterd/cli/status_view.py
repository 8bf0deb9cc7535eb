"""The renderer of ``meterd status``: the numbers of ``meterd.ops.gather`` as rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table


def status_view(st: Any) -> Any:
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
    formats = st.data_format
    if formats is not None:
        colour = "red" if formats.drain_needed else "green"
        summary.add_row("redis data format", f"[{colour}]{escape(formats.summary)}[/{colour}]")
        if formats.refusal:
            summary.add_row("[red]upgrade blocked[/red]", escape(formats.refusal))
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
