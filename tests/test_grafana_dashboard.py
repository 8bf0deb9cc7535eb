"""deploy/grafana: the dashboard asks Prometheus only for series meterd really exports.

meterd's metrics are one collector that builds its families at scrape time
(``meterd.metrics.MeterdCollector``), so the names are read by collecting it over
a test runtime with every optional part present (a broker's queue depth, every
storage figure, an unsafe Redis setting) and some of every counter recorded, so
each family also shows its labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meterd import metrics as metrics_module
from meterd.api.request_metrics import RequestMetrics
from meterd.core.timeutil import utcnow
from meterd.ops import UNSAFE, QueueDepth, RedisSafetyState, Storage
from meterd.runtime import Runtime
from meterd.storage.redis_safety import Problem

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "meterd.json"

#: Series Prometheus itself records for every target (the API has no request metrics
#: of its own: its panel shows Prometheus's scrape of it).
PROMETHEUS_SERIES: dict[str, set[str]] = {"up": set(), "scrape_duration_seconds": set()}
#: Labels Prometheus adds to every series, and the bucket label of histograms.
TARGET_LABELS = {"job", "instance"}

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


@pytest.fixture
def exported(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Every series name meterd's collector exports, with the labels it carries."""
    now = utcnow()
    report = runtime.ingest.ingest([{"junk": 1}], now=now)  # one invalid: a dead letter
    runtime.stats.record_ingest(report.decided_before_counting, 1, 0.004)
    runtime.stats.record_flush(0.02)
    runtime.stats.record_transitions({"EXPIRED": 1})
    runtime.stats.record_notification_failures(1)
    runtime.stats.record_counted_twice(1)
    runtime.stats.record_unreadable("not_json")
    runtime.stats.record_store_unavailable("meterd.flush")
    figures = Storage(1, 1, 100, 1, 1, 1, "2026-11-01T00:00:00+00:00", 8192)
    unsafe = RedisSafetyState(UNSAFE, "test", [Problem("appendonly", "no", "set it")])
    monkeypatch.setattr(metrics_module, "storage_figures", lambda _rt: figures)
    monkeypatch.setattr(metrics_module, "redis_safety", lambda _rt: unsafe)
    monkeypatch.setattr(
        metrics_module, "queue_depths", lambda _app: [QueueDepth("meterd.ingest", 1, 0)]
    )
    collector = metrics_module.MeterdCollector(lambda: runtime, lambda: None)
    requests = RequestMetrics()  # the API process's own, beside the cluster-wide ones
    requests.observe("GET", "/v1/features", 200, 0.003)
    series: dict[str, set[str]] = {}
    for family in [*collector.collect(), *requests.collect()]:
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        for suffix in _SUFFIXES[family.type]:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel but rows, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in panels(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, labels, keywords,
    strings, ranges and Grafana variables left out)."""
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr))))
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _KEYWORDS}


def label_names(expr: str) -> set[str]:
    """The labels an expression matches on or groups by."""
    found = {m for inner in _MATCHERS.findall(expr) for m in _MATCHER_LABEL.findall(inner)}
    for inner in _GROUPING.findall(expr):
        found |= {label.strip() for label in inner.split(",") if label.strip()}
    return found


def test_the_name_reader_finds_series_and_leaves_out_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, max by (le) (rate(meterd_x_bucket{job="a", q!~"b"}'
        "[$__rate_interval]))) / max(meterd_y) and time() - meterd_z offset 5m"
    )
    assert metric_names(expr) == {"meterd_x_bucket", "meterd_y", "meterd_z"}
    assert label_names(expr) == {"le", "job", "q"}


def test_every_panel_reads_only_series_meterd_exports(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    known = exported.keys() | PROMETHEUS_SERIES.keys()
    unknown = [
        (title, name)
        for title, expr in expressions(dashboard)
        for name in metric_names(expr)
        if name not in known
    ]
    assert unknown == []


def test_every_query_reads_some_series(dashboard: dict[str, Any]) -> None:
    assert [title for title, expr in expressions(dashboard) if not metric_names(expr)] == []


def test_the_check_catches_a_misspelt_metric(exported: dict[str, set[str]]) -> None:
    assert "meterd_events_total" in exported
    assert "meterd_event_total" not in exported
    assert metric_names("rate(meterd_event_total[5m])") == {"meterd_event_total"}


def test_every_label_a_query_uses_is_one_its_series_carry(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    series = {**exported, **PROMETHEUS_SERIES}
    wrong = []
    for title, expr in expressions(dashboard):
        carried = set().union(*(series.get(n, set()) for n in metric_names(expr)))
        extra = label_names(expr) - carried - TARGET_LABELS
        if extra:
            wrong.append((title, expr, sorted(extra)))
    assert wrong == []


def test_the_job_labels_name_scrape_jobs_of_the_prometheus_config(
    dashboard: dict[str, Any],
) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    named = {
        value
        for _, expr in expressions(dashboard)
        for value in re.findall(r'job\s*=\s*"([^"]+)"', expr)
    }
    assert named and named <= jobs
    patterns = re.findall(r'job\s*=~\s*"([^"]+)"', "\n".join(e for _, e in expressions(dashboard)))
    assert all(any(re.fullmatch(p, job) for job in jobs) for p in patterns)


def test_the_dashboard_has_a_uid_a_title_and_panels_on_the_grid(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_every_panel_and_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]


def test_the_dashboard_provider_loads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "meterd.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {
        target: source
        for source, target, *_ in (v.split(":") for v in compose["services"]["grafana"]["volumes"])
    }
    (entry,) = provider["providers"]
    folder = mounts[entry["options"]["path"]]
    assert (ROOT / folder / DASHBOARD.name).resolve() == DASHBOARD.resolve()
