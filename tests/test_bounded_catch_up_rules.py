"""Issue 20, item 4, the pure rule: a bounded chain (``due_transitions`` with the late
window's start and a cap) is the unbounded chain with runs of renewals or months
folded into summary steps: unfolded, it is step for step the same; it lists no
term that ended before the late window and at most ``max_terms`` in a row; it
leaves the entitlement where the unbounded chain does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.core.domain import Renewal, Status
from meterd.core.lifecycle import Transition, due_transitions
from meterd.core.terms import Term, add_months

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
UNBOUNDED = 10**9


def unfolded(chain: list[Transition], renewal: Renewal | None) -> list[tuple[object, ...]]:
    """The chain with each summary step replaced by the steps it stands for, as
    (from, to, at, end of the period it opens) tuples."""
    steps: list[tuple[object, ...]] = []
    for step in chain:
        end = step.renewal_end or step.month_end
        if not step.summarised:
            steps.append((step.from_status, step.to_status, step.at, end))
            continue
        at, status = step.at, step.from_status
        for _ in range(step.summarised):
            if step.month_end is not None:
                nxt = add_months(at, 1)
            else:
                assert renewal is not None
                term = renewal.term
                nxt = term.start(renewal.anchor, term.index_at(renewal.anchor, at) + 1)
            steps.append((status, step.to_status, at, nxt))
            at, status = nxt, step.to_status
        assert at == end
    return steps


scenario = st.fixed_dictionaries(
    {
        "status": st.sampled_from([Status.PENDING, Status.ACTIVE, Status.GRACE, Status.EXPIRED]),
        "starts": st.integers(-3000, 10).map(lambda d: NOW + timedelta(days=d, hours=3)),
        "length": st.integers(1, 400).map(lambda d: timedelta(days=d)),
        "grace": st.one_of(st.none(), st.integers(1, 90).map(lambda d: timedelta(days=d))),
        "kind": st.sampled_from(["renewing-days", "renewing-months", "pay-per-use", "plain"]),
        "months": st.integers(1, 13),
        "window": st.integers(1, 60).map(lambda d: timedelta(days=d)),
        "cap": st.integers(1, 60),
    }
)


@settings(max_examples=400, deadline=None)
@given(s=scenario)
def test_a_bounded_chain_is_the_unbounded_chain_folded(s: dict[str, object]) -> None:
    starts: datetime = s["starts"]  # type: ignore[assignment]
    length: timedelta = s["length"]  # type: ignore[assignment]
    grace: timedelta | None = s["grace"]  # type: ignore[assignment]
    kind, cap = s["kind"], int(s["cap"])  # type: ignore[call-overload]
    history_before = NOW - s["window"]  # type: ignore[operator]
    renewal, next_period_at = None, None
    if kind == "renewing-days":
        renewal = Renewal(starts, Term(length=length), None)
        ends = starts + length
    elif kind == "renewing-months":
        renewal = Renewal(starts, Term(months=int(s["months"])), None)  # type: ignore[call-overload]
        ends = renewal.term.start(starts, 1)
    else:
        ends = starts + length
    if kind == "pay-per-use":
        next_period_at = add_months(starts.replace(day=1, hour=0), 1)
    grace_until = ends + grace if grace else None
    args = (s["status"], starts, ends, grace_until, NOW, renewal, next_period_at)

    full = due_transitions(*args, max_terms=UNBOUNDED)  # type: ignore[arg-type]
    bounded = due_transitions(*args, history_before=history_before, max_terms=cap)  # type: ignore[arg-type]

    assert unfolded(bounded, renewal) == unfolded(full, renewal)
    listed = [t for t in bounded if t.opens_period]
    assert len(listed) <= 2 * cap
    for t in listed:
        assert (t.renewal_end or t.month_end) > history_before  # type: ignore[operator]
    if bounded:
        assert bounded[-1].to_status == full[-1].to_status


def test_a_year_one_daily_renewal_chain_is_one_summary_and_the_late_window() -> None:
    start = datetime(1, 1, 1, tzinfo=UTC)
    renewal = Renewal(start, Term(length=timedelta(days=1)), None)
    chain = due_transitions(
        Status.ACTIVE, start, start + timedelta(days=1), None, NOW, renewal,
        history_before=NOW - timedelta(days=35),
    )  # fmt: skip
    summary, *listed = chain
    assert summary.summarised == (datetime(2026, 10, 18, tzinfo=UTC) - start).days - 1
    assert summary.renewal_end == listed[0].at == datetime(2026, 10, 18, tzinfo=UTC)
    assert [t.summarised for t in listed] == [0] * 36
    assert listed[-1].renewal_end == datetime(2026, 11, 23, tzinfo=UTC)


def test_pay_per_use_months_in_grace_are_summarised_up_to_the_end_of_grace() -> None:
    start = datetime(1, 1, 1, tzinfo=UTC)
    ends, grace_until = NOW - timedelta(days=400), NOW + timedelta(days=40)
    chain = due_transitions(
        Status.ACTIVE, start, ends, grace_until, NOW, None, datetime(1, 2, 1, tzinfo=UTC),
        history_before=NOW - timedelta(days=35),
    )  # fmt: skip
    kinds = [(t.from_status, t.to_status, t.month_end is not None, t.summarised > 0) for t in chain]
    assert kinds == [
        (Status.ACTIVE, Status.ACTIVE, True, True),  # every month before ends_at
        (Status.ACTIVE, Status.GRACE, False, False),
        (Status.GRACE, Status.GRACE, True, True),  # grace months that ended before October
        (Status.GRACE, Status.GRACE, True, False),  # October
        (Status.GRACE, Status.GRACE, True, False),  # November
    ]
    assert chain[2].month_end == datetime(2026, 10, 1, tzinfo=UTC)
