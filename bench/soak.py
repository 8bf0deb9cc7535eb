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
  ``--broker-on-counter-redis`` puts it on the counter Redis (db 1) instead, the
  embedded default's shape: then it is killed and filled with it, and every
  publisher retries until the broker takes its message (a re-send is harmless).

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
   Beside them, a poison message every ``--poison-every`` s, cycling through
   ``POISON_KINDS``: bodies that are no Celery envelope (``{"a": 1}``, ``null``,
   a string, a bare list of events), a batch with one kombu-tagged event, bodies
   that are not JSON or not UTF-8, pickle and YAML, no task header, an unknown
   task, a gzip header over a body that is not, a message over the workers'
   METERD_MAX_MESSAGE_BYTES (``--max-message-bytes``) and garbage LPUSHed raw
   onto the queue list. Each carries ``poison-<kind>-<n>``; the valid events
   inside them are a stream of their own, in the expected totals.
3. Faults, on a schedule: the ingest worker SIGKILLed (process group) and
   restarted every ``--worker-kill-every`` s; the counter Redis kill -9ed and
   restarted on the same directory every ``--redis-kill-every`` s; the
   database stopped with ``pg_ctl stop -m immediate`` for ``--db-down`` s every
   ``--db-stop-every`` s; the counter Redis made full once (``maxmemory`` just
   under its ``used_memory`` at ``--redis-full-at`` s, 67.5% into the run unless
   given, back to 0 after
   ``--redis-full-for`` s; the writes it refused from ``INFO errorstats``). A
   supervisor restarts any worker that exits by itself: such an exit (one not
   caused by the harness's SIGKILLs, so caused by input or a store fault) fails
   the run, and so does "Unrecoverable error" in a worker or beat log.
4. The producers stop; the harness waits for the drain (everything counted,
   flushed, dead-lettered and the ingest queue empty), then checks every event:
   each one the producers sent (and not past the late window) is in the event
   log exactly once with its quantity and customer; ``usage_periods``, the log
   and the live Redis totals all equal the expected total. Every dead letter is
   either ``late`` (one per event sent past the late window) or traced to its
   poison message, as the kind it must become, once; every poison message that
   must leave one did (an item pushed raw and taken by a worker SIGKILLed before
   it is stored is lost, as documented: counted apart);
   ``meterd_unreadable_messages_total`` is checked per kind against what was sent.

Ingest latency is measured with probes: every ``--probe-every`` s a batch of
``--probe-size`` events for a customer of its own is published into the same
ingest queue (behind the producers' batches); the latency is the time from its
publish until its count is visible in Redis (the used totals of that customer),
one probe in flight at a time.

Exits 1 if anything was lost or double-counted, a poison message did not end as
it must, a worker exited by itself, or the run did not drain.

    python bench/soak.py                         # 10 minutes, faults every 30 s
    python bench/soak.py --minutes 1 --rate 2000 --redis-full-for 10
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import json
import math
import os
import pickle
import random
import re
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
from kombu import Producer
from kombu.exceptions import OperationalError
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
from meterd.core.quantity import to_micros
from meterd.core.timeutil import isoformat, utcnow
from meterd.ops import flush_lag_seconds, queue_depths
from meterd.producer import chunked, usage_event
from meterd.runtime import Runtime
from meterd.services.catalog import NewEntitlement
from meterd.storage.database import Database
from meterd.storage.migrate import upgrade
from meterd.storage.models import DeadLetter, EventLogRow, UsagePeriod
from meterd.testing import PrivateRedis, free_port

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


RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}
#: What a publish to a broker that is killed or full raises (kombu's retry gives up
#: after one reconnection on a Redis transport).
PUBLISH_ERRORS = (OperationalError, redis.RedisError, OSError)


def until_published(publish: Callable[[], None]) -> None:
    """``publish()``, again until the broker takes the message (a broker on the
    counter Redis is killed and filled with it): a message published twice is
    harmless, its events are counted once."""
    while True:
        try:
            publish()
            return
        except PUBLISH_ERRORS:
            time.sleep(0.5)


def send_batch(app: Any, batch: list[dict[str, Any]]) -> None:
    def publish() -> None:
        with app.producer_or_acquire() as producer:
            app.send_task(
                INGEST_TASK, args=[batch], producer=producer, retry=True, retry_policy=RETRY_POLICY
            )

    until_published(publish)


def send_batches(app: Any, events: list[dict[str, Any]], batch_size: int) -> None:
    for batch in chunked(events, batch_size):
        send_batch(app, batch)


# -- poison: messages no task can read as sent --------------------------------------


@dataclass(frozen=True)
class PoisonKind:
    """A kind of poison message the harness publishes, and what it must end as:
    ``counted`` (its events are in the expected totals), ``nothing`` (logged and
    counted by the metric only), ``event letter`` (one ``invalid`` dead letter for
    the payload it carried) or ``letter:<kind>`` (an unreadable-message dead letter
    of that kind, the raw message kept). ``stat`` is the kind it counts under in
    ``meterd_unreadable_messages_total`` (None: a readable message, not counted)."""

    label: str
    what: str
    becomes: str
    stat: str | None


POISON_KINDS = (
    PoisonKind("object", '`{"a": 1, ...}` as the body', "event letter", "rewritten_batch"),
    PoisonKind("null", "`null` as the body", "nothing", "rewritten_batch"),
    PoisonKind("string", "a JSON string as the body", "event letter", "rewritten_batch"),
    PoisonKind("bare_events", "a list of 5 events, no envelope", "counted", "rewritten_batch"),
    PoisonKind(
        "tagged_batch",
        '20 events, one carrying `{"__type__": "uuid", "__value__": "x"}`',
        "counted",
        None,
    ),
    PoisonKind("not_json", "a body that is not JSON", "letter:not_json", "not_json"),
    PoisonKind("binary", "binary bytes (not UTF-8)", "letter:not_json", "not_json"),
    PoisonKind("pickle", "`application/x-python-serialize`", "letter:content_type", "content_type"),
    PoisonKind("yaml", "`application/x-yaml`", "letter:content_type", "content_type"),
    PoisonKind("no_task", "no `task` header", "letter:no_task", "no_task"),
    PoisonKind(
        "unknown_task", "a task name meterd does not have", "letter:unknown_task", "unknown_task"
    ),
    PoisonKind(
        "gzip_garbage",
        "`compression: gzip`, a body that is not",
        "letter:undecodable",
        "undecodable",
    ),
    PoisonKind("too_large", "over METERD_MAX_MESSAGE_BYTES", "letter:too_large", "too_large"),
    PoisonKind(
        "raw_push", "garbage bytes LPUSHed onto the queue list", "letter:no_task", "no_task"
    ),
)
POISON_BY_LABEL = {kind.label: kind for kind in POISON_KINDS}
#: Every poison message carries ``poison-<label>-<n>``, so its dead letter is
#: distinct and traced back to it.
POISON_MARK = re.compile(rb"poison-([a-z_]+)-(\d+)")


@dataclass
class PoisonMessage:
    """A raw message to publish (``raw_push``: an item to push onto the queue list)."""

    body: bytes | str
    headers: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    raw_push: bool = False


def poison_message(
    label: str, n: int, events: Callable[[int], list[dict[str, Any]]], max_bytes: int
) -> PoisonMessage:
    """Poison message ``n`` of kind ``label``; ``events(k)`` gives the next ``k``
    events of the poison stream (counted, so in the expected totals)."""
    mark = f"poison-{label}-{n}"
    task = {"task": INGEST_TASK, "id": mark, "lang": "py"}
    match label:
        case "object":
            return PoisonMessage(json.dumps({"a": 1, "mark": mark}), task)
        case "null":
            return PoisonMessage("null", task)
        case "string":
            return PoisonMessage(json.dumps(mark), task)
        case "bare_events":
            return PoisonMessage(json.dumps(events(5)), task)
        case "tagged_batch":
            batch = events(20)
            batch[n % 20]["data"]["user_text"] = {"__type__": "uuid", "__value__": "x"}
            return PoisonMessage(json.dumps([[batch], {}, {}]), task)
        case "too_large":
            padding = "x" * (max_bytes + 64 * 1024)
            return PoisonMessage(json.dumps([[[{"mark": mark, "padding": padding}]], {}, {}]), task)
    return unreadable_poison(label, mark, task)


def unreadable_poison(label: str, mark: str, task: dict[str, Any]) -> PoisonMessage:
    """The poison messages that are no JSON task message at all."""
    empty_args = json.dumps([[], {"mark": mark}, {}])
    match label:
        case "not_json":
            return PoisonMessage(f"{{{{{{ {mark} is not json", task)
        case "binary":
            return PoisonMessage(b"\xff\xfe\x00" + mark.encode() + b"\x80\x81", task)
        case "pickle":
            body = pickle.dumps((mark, 1))
            return PoisonMessage(body, task, "application/x-python-serialize", "binary")
        case "yaml":
            return PoisonMessage(f"- mark: {mark}\n", task, "application/x-yaml")
        case "no_task":
            return PoisonMessage(empty_args, {"id": mark, "lang": "py"})
        case "unknown_task":
            return PoisonMessage(empty_args, {**task, "task": "meterd.no_such_task"})
        case "gzip_garbage":
            headers = {**task, "compression": "application/x-gzip"}
            return PoisonMessage(f"{mark} is not gzip".encode(), headers)
        case "raw_push":
            return PoisonMessage(b"\x00" + mark.encode() + b" garbage \xff", {}, raw_push=True)
    raise ValueError(f"no poison kind {label!r}")


def poison_mark(payload_text: str) -> tuple[str, int] | None:
    """The (label, n) of the poison message a dead letter came from, if any (a body
    the letter keeps in base64 is decoded first)."""
    found = POISON_MARK.search(payload_text.encode("utf-8", "surrogatepass"))
    if found is None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(payload_text)["unreadable_message"]
            if record.get("body_encoding") == "base64":
                found = POISON_MARK.search(base64.b64decode(record["body"]))
    if found is None:
        return None
    return found.group(1).decode(), int(found.group(2))


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
        send_batch(app, batch)
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


class CounterRedis(PrivateRedis):
    """The counter Redis: AOF fsynced on every write, never evicting; kill -9
    and a restart on the same directory must lose nothing that was answered."""

    def __init__(self, directory: Path, aof: bool = True) -> None:
        directory.mkdir()
        super().__init__(
            directory,
            aof=aof,
            args=("--maxmemory-policy", "noeviction"),
            log=directory / "redis.log",
            ready_timeout=120,
        )

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)


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
    #: A poison message every this many seconds, cycling through ``POISON_KINDS``
    #: (0: none).
    poison_every: float = 0.5
    #: METERD_MAX_MESSAGE_BYTES of the workers (the ``too_large`` poison is just over).
    max_message_bytes: int = 4 * 1024 * 1024
    #: The counter Redis made full (``maxmemory`` just under ``used_memory``) at this
    #: second of the run, for ``redis_full_for`` s (0: never). None: at 67.5% of the
    #: run (405 s of 600: clear of the default Redis kills and database stops, with
    #: a worker kill inside).
    redis_full_at: float | None = None
    redis_full_for: float = 25.0
    broker_url: str = BROKER_URL
    #: The broker on the counter Redis (db 1) instead of ``broker_url``: killed and
    #: filled with it, as on the embedded default.
    broker_on_counter_redis: bool = False
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
        full_at = 0.675 * self.seconds if self.redis_full_at is None else self.redis_full_at
        if self.redis_full_for > 0 and 0 < full_at < self.seconds:
            actions.append((full_at, "fill redis"))
            actions.append((min(full_at + self.redis_full_for, self.seconds), "free redis"))
        return sorted(actions)


def ci_config(broker_url: str = BROKER_URL) -> SoakConfig:
    """The 60-second version CI runs: a fixed modest rate (no measuring), the worker
    killed every 15 s, one Redis kill, one 10-s database stop, the counter Redis
    full for 9 s (a worker kill inside), poison messages twice a second."""
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
        max_message_bytes=1024 * 1024,
        redis_full_at=43.0,
        redis_full_for=9.0,
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
    #: Workers that exited by themselves (not by the harness's SIGKILL) and were
    #: restarted: exits caused by input or by a store fault; the run fails on any.
    restarts_after_exit: int = 0
    #: Poison messages published, per ``PoisonKind.label``.
    poison_sent: dict[str, int] = field(default_factory=dict)
    #: Valid events inside poison messages (part of the expected totals).
    poison_events: int = 0
    #: Dead letters traced back to a poison message, per label (distinct messages).
    poison_letters: dict[str, int] = field(default_factory=dict)
    #: Dead letters of a poison message stored more than once, per label.
    poison_letters_doubled: dict[str, int] = field(default_factory=dict)
    #: ``StatsStore.unreadable()``: ``meterd_unreadable_messages_total`` per kind.
    unreadable_stats: dict[str, int] = field(default_factory=dict)
    #: Items pushed raw onto the list and never dead-lettered: taken by a worker
    #: SIGKILLed before it stored them (no delivery tag: documented as lost).
    raw_lost: int = 0
    #: Episodes of a full counter Redis: when, how long, the limit, the writes refused.
    redis_full: list[dict[str, Any]] = field(default_factory=list)
    #: Lines of the worker and beat logs, per pattern of ``LOG_PATTERNS``.
    log_lines: dict[str, int] = field(default_factory=dict)
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
            *self.full_rows(),
            (
                "**worker restarts caused by input** (exits not caused by the harness's SIGKILLs)",
                f"**{self.restarts_after_exit}**",
            ),
            (
                '"Unrecoverable error" in the worker and beat logs',
                str(self.log_lines.get("Unrecoverable error", 0)),
            ),
            ("drained after the producers stopped", drained),
        ]
        lines = ["| figure | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        if self.poison_sent:
            lines += ["", self.poison_table()]
        return "\n".join(lines)

    def full_rows(self) -> list[tuple[str, str]]:
        mib = 1024 * 1024
        rows = []
        for episode in self.redis_full:
            rows.append(
                (
                    "faults: counter Redis full (`maxmemory` just under `used_memory`)",
                    f"at {episode['at']:.0f} s for {episode['seconds']:.0f} s "
                    f"(maxmemory {episode['maxmemory'] / mib:.1f} MiB, used "
                    f"{episode['used'] / mib:.1f} MiB){episode.get('note', '')}",
                )
            )
            rows.append(
                (
                    "writes the full Redis refused (`INFO errorstats` OOM)",
                    f"{episode['refused']:,}",
                )
            )
        if self.redis_full:
            logged = ", ".join(
                f'"{name}" {self.log_lines.get(name, 0):,}'
                for name in ("command not allowed when used memory", "store.unavailable.waiting",
                             "Connection to broker lost", "metrics.record_failed")
            )  # fmt: skip
            rows.append(("worker and beat log lines, whole run", logged))
        return rows

    def poison_table(self) -> str:
        """Per kind of poison message: sent, what it must become, what it became."""
        lines = [
            "| poison message | sent | must become | became |",
            "|---|---:|---|---:|",
        ]
        for kind in POISON_KINDS:
            sent = self.poison_sent.get(kind.label, 0)
            if kind.becomes == "counted":
                became = "counted (in the totals above)"
            elif kind.becomes == "nothing":
                became = "-"
            else:
                became = f"{self.poison_letters.get(kind.label, 0):,} dead letters"
                if twice := self.poison_letters_doubled.get(kind.label, 0):
                    became += f" (and {twice} stored again)"
            must = {
                "counted": "its events counted",
                "nothing": "nothing (no events; logged, counted by the metric)",
                "event letter": "one `invalid` dead letter (the payload it carried)",
            }.get(kind.becomes, f"a dead letter of the raw message, `{kind.becomes[7:]}`")
            lines.append(f"| {kind.what} | {sent:,} | {must} | {became} |")
        total = sum(self.poison_sent.values())
        letters = sum(self.poison_letters.values())
        lines.append(f"| **all** | **{total:,}** | | **{letters:,} dead letters** |")
        want: Counter[str] = Counter()
        for kind in POISON_KINDS:
            if kind.stat is not None:
                want[kind.stat] += self.poison_sent.get(kind.label, 0)
        stats = ", ".join(
            f"{k} {self.unreadable_stats.get(k, 0):,} ({want.get(k, 0):,})"
            for k in sorted(want.keys() | self.unreadable_stats.keys())
        )
        lines += [
            "",
            f"Valid events inside poison messages (in the expected totals): "
            f"{self.poison_events:,}. Dead letters of one poison message stored again: "
            f"{sum(self.poison_letters_doubled.values())}. Items pushed raw and lost to a SIGKILL "
            f"(documented): {self.raw_lost}. `meterd_unreadable_messages_total` per kind "
            f"(sent): {stats or '-'}.",
        ]
        return "\n".join(lines)


#: What the harness counts in the worker and beat logs.
LOG_PATTERNS = (
    "Unrecoverable error",
    "command not allowed when used memory",  # a refused write that surfaced in a log
    "store.unavailable.waiting",
    "Connection to broker lost",
    "metrics.record_failed",
    "message.unreadable",
    "message.read_as_batch",
)

#: How a line of a rich traceback (the console log format's) starts.
TRACEBACK_FRAME = ("│", "╭", "╰")


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
        self.poison_stream = Stream("soak-poison", cfg.customers)
        self.poison_sent = 0  # events of the poison stream sent
        self.full: dict[str, Any] | None = None  # the full-Redis episode under way

    # setup -----------------------------------------------------------------------

    def start_stores(self) -> None:
        cfg = self.cfg
        self.redis = CounterRedis(self.root / "redis", aof=cfg.redis_aof)
        self.redis.start()
        self.pg = PrivatePostgres(self.root / "pg")
        self.pg.init()
        self.pg.start()
        upgrade(self.pg.url)
        self.broker_url = (
            f"redis://127.0.0.1:{self.redis.port}/1" if cfg.broker_on_counter_redis
            else cfg.broker_url
        )  # fmt: skip
        self.settings = Settings(
            database_url=self.pg.url,
            redis_url=self.redis.url,
            broker_url=self.broker_url,
            broker_key_prefix=f"soak-{uuid.uuid4().hex[:8]}-q:",
            redis_prefix="soak",
            flush_interval=cfg.flush_interval,
            visibility_timeout=cfg.visibility_timeout,
            dedupe_ttl=cfg.dedupe_ttl,
            late_window=cfg.late_window,
            max_message_bytes=cfg.max_message_bytes,
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
            "METERD_MAX_MESSAGE_BYTES": str(s.max_message_bytes),
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
        send_batches(self.app, events, cfg.batch_size)

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
            send_batches(self.app, batch, cfg.probe_size)
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

    def poison_events(self, k: int) -> list[dict[str, Any]]:
        """The next ``k`` events of the poison stream (counted, like any sent)."""
        cfg, stamp = self.cfg, utcnow()
        events = [
            self.poison_stream.payload(self.poison_sent + i, stamp, cfg.dedupe_ttl, cfg.late_window)
            for i in range(k)
        ]
        self.poison_sent += k
        return events

    def poison_loop(self) -> None:
        """A poison message every ``poison_every`` s, cycling through the kinds."""
        cfg, report = self.cfg, self.report
        sent: Counter[str] = Counter()
        broker = redis.Redis.from_url(self.broker_url, socket_timeout=10)
        at = time.monotonic()
        while not self.stopping.is_set():
            kind = POISON_KINDS[sum(sent.values()) % len(POISON_KINDS)]
            message = poison_message(
                kind.label, sent[kind.label], self.poison_events, cfg.max_message_bytes
            )
            until_published(lambda: self.publish_raw(message, broker))  # noqa: B023
            sent[kind.label] += 1
            report.poison_sent = dict(sent)
            at += cfg.poison_every
            self.stopping.wait(max(0.0, at - time.monotonic()))
        broker.close()
        report.poison_events = self.poison_sent

    def publish_raw(self, message: PoisonMessage, broker: redis.Redis) -> None:
        """Publish ``message`` as it is, with kombu (or push it onto the queue list)."""
        if message.raw_push:
            broker.lpush(self.settings.broker_key_prefix + INGEST_QUEUE, message.body)
            return
        with self.app.connection_for_write() as conn:
            Producer(conn).publish(
                message.body,
                routing_key=INGEST_QUEUE,
                exchange="",
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                serializer=None,
                retry=True,
                retry_policy=RETRY_POLICY,
                declare=[self.app.amqp.queues[INGEST_QUEUE]],
            )

    def refused_writes(self) -> int:
        """Commands the counter Redis refused for ``maxmemory`` since it started."""
        stats = self.rt.redis.info("errorstats")
        oom = stats.get("errorstat_OOM", {})
        return int(oom.get("count", 0) if isinstance(oom, dict) else 0)

    def fill_redis(self, at: float) -> None:
        """``maxmemory`` just under what the counter Redis uses: every write that may
        grow memory is refused (``OOM command not allowed``), reads and deletions go on."""
        client = self.rt.redis
        used = int(client.info("memory")["used_memory"])
        limit = max(1, used - 1024 * 1024)
        probes = 0
        while True:
            client.config_set("maxmemory", limit)
            probes += 1
            try:
                client.set(f"{self.settings.redis_prefix}:soak-fill-probe", "x" * 1024)
            except redis.exceptions.OutOfMemoryError:
                break
            client.delete(f"{self.settings.redis_prefix}:soak-fill-probe")
            if limit == 1:
                raise RuntimeError("the counter Redis took a write at maxmemory 1")
            limit = max(1, limit - 1024 * 1024)
        self.full = {
            "at": at,
            "started": time.monotonic(),
            "used": used,
            "maxmemory": limit,
            "refused_before": self.refused_writes(),
        }

    def free_redis(self, note: str = "") -> None:
        """``maxmemory`` back to 0 (no limit); the episode's figures into the report."""
        full, self.full = self.full, None
        if full is None:
            return
        if not note:
            self.rt.redis.config_set("maxmemory", 0)
        refused = self.refused_writes() - full["refused_before"] if not note else 0
        self.report.redis_full.append(
            {
                "at": full["at"],
                "seconds": time.monotonic() - full["started"],
                "used": full["used"],
                "maxmemory": full["maxmemory"],
                "refused": refused,
                "note": note,
            }
        )

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
                self.apply(action, at)
                if action not in ("start database", "free redis"):
                    faults[action] += 1
            except Exception as exc:  # a fault that could not be applied is a problem
                self.errors.append(f"{action} at {at:.0f} s: {exc}")
        if not self.db_up:  # the run ended inside a stop
            self.report.db_start_seconds.append(self.pg.start())
            self.db_up = True
        if self.full is not None:  # the run ended inside a full Redis
            self.free_redis()
        self.report.faults = dict(faults)

    def apply(self, action: str, at: float) -> None:
        """Apply one fault of the schedule (``at``: its second in the run)."""
        if action == "kill worker":
            with self.lock:
                self.ingest.kill()
                self.ingest.start()
        elif action == "kill redis":
            if self.full is not None:  # a restart forgets maxmemory
                self.free_redis(" (cut short by a Redis kill)")
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
        elif action == "fill redis":
            self.fill_redis(at)
        elif action == "free redis":
            self.free_redis()

    def start_producers(self, rate: float) -> list[tuple[subprocess.Popen[bytes], Path]]:
        cfg = self.cfg
        settings = {
            "broker_url": self.broker_url,
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
        poison = threading.Thread(target=self.poison_loop, daemon=True)
        if cfg.poison_every > 0:
            poison.start()
        for proc, _ in producers:
            proc.wait(timeout=cfg.seconds + 120)
        self.report.seconds = time.monotonic() - start  # replaced by the producers' own
        self.stopping.set()
        faults.join(timeout=180)
        if cfg.poison_every > 0:
            poison.join(timeout=180)
            if poison.is_alive():
                raise RuntimeError("the poison publisher did not stop")
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
        expected.add(self.poison_stream, self.poison_sent)
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
        r.sent_events += self.poison_sent
        return expected

    def poison_letters_due(self) -> int:
        """Dead letters the poison messages must leave (raw pushes aside: a worker
        SIGKILLed after taking one loses it, as documented)."""
        return sum(
            n
            for label, n in self.report.poison_sent.items()
            if POISON_BY_LABEL[label].becomes not in ("counted", "nothing") and label != "raw_push"
        )

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
                and state.get("dead", -1) >= expected.too_late + self.poison_letters_due()
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
        if r.dead_letters.get("late", 0) != expected.too_late:
            r.problems.append(
                f"dead letters {r.dead_letters}, expected late: {expected.too_late} "
                "(one per event sent past the late window)"
            )
        self.check_poison()
        r.outcomes = rt.stats.events()

    def check_poison(self) -> None:
        """Every dead letter other than ``late`` must come from a poison message, as
        the kind it must become, once; every poison message that must leave one did."""
        marks: dict[str, set[int]] = {label: set() for label in POISON_BY_LABEL}
        letters: Counter[str] = Counter()
        strays: Counter[str] = Counter()
        query = select(DeadLetter.reason, DeadLetter.payload).where(DeadLetter.reason != "late")
        with self.rt.database.engine.connect() as conn:
            for reason, payload in conn.execute(query):
                found = poison_mark(payload)
                kind = POISON_BY_LABEL.get(found[0]) if found else None
                if found is None or kind is None:
                    strays[f"{reason}: no poison message's"] += 1
                    continue
                try:
                    record = json.loads(payload)
                    unreadable = isinstance(record, dict) and "unreadable_message" in record
                    became = (
                        f"letter:{record['unreadable_message']['kind']}"
                        if unreadable
                        else "event letter"
                    )
                except (ValueError, KeyError, TypeError):
                    became = "?"
                if reason != "invalid" or became != kind.becomes:
                    strays[f"{kind.label} became {reason} {became}, not {kind.becomes}"] += 1
                    continue
                letters[kind.label] += 1
                marks[kind.label].add(found[1])
        self.judge_poison_letters(marks, letters, strays)
        self.check_unreadable_stats()

    def judge_poison_letters(
        self, marks: dict[str, set[int]], letters: Counter[str], strays: Counter[str]
    ) -> None:
        r = self.report
        r.poison_letters = {label: len(seen) for label, seen in marks.items() if seen}
        r.poison_letters_doubled = {
            label: n - len(marks[label]) for label, n in letters.items() if n > len(marks[label])
        }
        for label, n in r.poison_letters_doubled.items():
            r.problems.append(f"{label}: {n} poison messages dead-lettered again")
        for what, n in strays.items():
            r.problems.append(f"{n} dead letters: {what}")
        for kind in POISON_KINDS:
            sent = r.poison_sent.get(kind.label, 0)
            if kind.becomes in ("counted", "nothing"):
                continue
            found = r.poison_letters.get(kind.label, 0)
            beyond = marks[kind.label] - set(range(sent))
            if beyond:
                r.problems.append(f"{kind.label}: dead letters of messages never sent")
            if kind.label == "raw_push" and found <= sent:
                r.raw_lost = sent - found
            elif found != sent:
                r.problems.append(f"{kind.label}: {sent} sent, {found} dead-lettered")

    def check_unreadable_stats(self) -> None:
        """``meterd_unreadable_messages_total`` per kind against what was sent."""
        r = self.report
        r.unreadable_stats = self.rt.stats.unreadable()
        want: Counter[str] = Counter()
        for kind in POISON_KINDS:
            if kind.stat is not None:
                want[kind.stat] += r.poison_sent.get(kind.label, 0)
        # A message read again after a SIGKILL is counted again; a count the full
        # (or killed) Redis refused is logged "metrics.record_failed" instead.
        refused = self.log_lines().get("metrics.record_failed", 0)
        for stat, n in want.items():
            short = n - r.unreadable_stats.get(stat, 0)
            if short > refused + (r.raw_lost if stat == "no_task" else 0):
                r.problems.append(
                    f"meterd_unreadable_messages_total{{kind={stat}}}: "
                    f"{r.unreadable_stats.get(stat, 0)}, {n} sent"
                )
        for stat in r.unreadable_stats.keys() - want.keys():
            r.problems.append(f"unreadable messages of kind {stat}: none was sent")

    def log_lines(self) -> dict[str, int]:
        """Lines of the worker and beat logs matching each of ``LOG_PATTERNS``."""
        found: Counter[str] = Counter()
        for name in ("ingest.log", "flush.log", "beat.log"):
            path = self.root / name
            if not path.exists():
                continue
            with open(path, encoding="utf-8", errors="replace") as log:
                for line in log:
                    if line.startswith(TRACEBACK_FRAME):  # the source lines of a traceback
                        continue
                    for pattern in LOG_PATTERNS:
                        found[pattern] += pattern in line
        return {pattern: found[pattern] for pattern in LOG_PATTERNS}

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
        the faults applied (W worker kill, R Redis kill, D database stop, U up again,
        F counter Redis full, E room again)."""
        letters = {"kill worker": "W", "kill redis": "R", "stop database": "D"}
        letters |= {"start database": "U", "fill redis": "F", "free redis": "E"}
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
            self.report.log_lines = self.log_lines()
            self.check(expected)
            if self.report.restarts_after_exit:
                self.report.problems.append(
                    f"{self.report.restarts_after_exit} worker exits not caused by the harness"
                )
            if self.report.log_lines.get("Unrecoverable error"):
                self.report.problems.append('"Unrecoverable error" in a worker log')
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
                client = redis.Redis.from_url(self.broker_url)
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
                helps = {
                    "keep": "keep the run's directory",
                    "broker_on_counter_redis": "the broker on the counter Redis (db 1): killed"
                    " and filled with it, as on the embedded default",
                }
                parser.add_argument(flag, action="store_true", help=helps[name])
        else:
            kind = {"rate": float, "redis_full_at": float, "timeline": str}.get(name, type(value))
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
