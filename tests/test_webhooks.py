"""Webhook endpoints: several per org, each notification delivered once to each,
signed the Standard Webhooks way (checked with the ``standardwebhooks`` library),
targets refused by the SSRF guard at creation and at delivery (on the DNS answer),
the attempts logged, redelivery, and the migration of the org webhook of before."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from meterd.core.errors import ConflictError, InvalidError, NotFoundError
from meterd.core.notifications import Delivery
from meterd.runtime import Runtime
from meterd.services.notify import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    HttpWebhookSender,
    NotificationService,
    Sent,
)
from meterd.services.webhook_targets import check_url, new_secret, refusal, sign
from meterd.storage.database import make_engine
from meterd.storage.migrate import alembic_config, upgrade
from meterd.storage.webhooks import KEPT_ATTEMPTS

from .conftest import BACKEND, NOW, REAL_PG_URL
from .helpers import grant

#: When ``expire`` runs the lifecycle job.
T = NOW + timedelta(hours=1)


class Receiver:
    """A local endpoint answering with the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        r.close()


def service(
    rt: Runtime, *, allow_private: bool = True, resolver: Any = None, max_attempts: int = 10
) -> NotificationService:
    """The runtime's store behind a sender (and URL check) allowing private targets
    or not; ``resolver`` stands in for DNS."""
    extra = {"resolver": resolver} if resolver else {}
    sender = HttpWebhookSender(5.0, time.time, allow_private=allow_private, **extra)
    return NotificationService(
        rt.notification_store, sender, max_attempts=max_attempts, allow_private=allow_private
    )


def expire(rt: Runtime, customer: str = "cust-1") -> str:
    """A grant that expires at T; the id of the notification the job records."""
    ent = grant(rt, customer, ends_at=T)
    rt.lifecycle.advance(T)
    (note,) = rt.notification_store.all_for(ent.id)  # type: ignore[arg-type]
    return note.id


def run(svc: NotificationService, at: datetime) -> Any:
    batches: list[list[dict[str, Any]]] = []
    svc.dispatch(at, batches.append)
    return svc.deliver([p for b in batches for p in b], at)


def status(rt: Runtime, note_id: str) -> str:
    return rt.notification_store.statuses([note_id])[note_id]


# -- signatures -----------------------------------------------------------------------


def test_a_delivery_verifies_with_the_standardwebhooks_library(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    svc = service(runtime)
    made = svc.add_endpoint("acme", receivers[0].url, None, NOW)
    assert made.generated and made.secret.startswith("whsec_")
    note_id = expire(runtime)
    assert run(svc, T).delivered == 1
    ((headers, body),) = receivers[0].requests
    payload = standardwebhooks.Webhook(made.secret).verify(body, headers)
    assert payload["id"] == note_id == headers["webhook-id"]
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(body, headers)


def test_our_signature_is_the_librarys_for_a_given_secret() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    body = b'{"id":"ntf_x","n":"\\u00e9"}'
    stamp = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    ours = sign(secret, "ntf_x", int(stamp.timestamp()), body)
    assert ours == standardwebhooks.Webhook(secret).sign("ntf_x", stamp, body)


def test_the_webhook_id_is_the_same_on_every_retry(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    receivers[0].statuses = [500]
    svc = service(runtime)
    svc.add_endpoint("acme", receivers[0].url, None, NOW)
    note_id = expire(runtime)
    assert run(svc, T).failed_attempts == 1
    assert run(svc, T + FIRST_BACKOFF).delivered == 1
    ids = [h["webhook-id"] for h, _ in receivers[0].requests]
    assert ids == [note_id, note_id]


# -- the SSRF guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
    ],
)
def test_a_literal_private_ip_is_refused_at_creation_and_allowed_with_the_setting(
    runtime: Runtime, url: str
) -> None:
    with pytest.raises(InvalidError, match="METERD_WEBHOOK_ALLOW_PRIVATE"):
        service(runtime, allow_private=False).add_endpoint("acme", url, None, NOW)
    assert service(runtime, allow_private=True).add_endpoint("acme", url, None, NOW).endpoint


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "http:///nohost", "https://h:99999/"],
)
def test_a_url_that_is_not_http_to_a_host_is_refused(url: str) -> None:
    with pytest.raises(InvalidError):
        check_url(url, allow_private=True)


def test_a_public_address_passes_the_guard() -> None:
    assert check_url("https://u:p@hooks.example.com/", allow_private=False)  # basic auth
    assert refusal("93.184.216.34") is None
    assert refusal("2606:2800:220:1:248:1893:25c8:1946") is None
    assert check_url("https://hooks.example.com/x", allow_private=False)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (["127.0.0.1"], "127.0.0.1 is loopback"),
        (["169.254.169.254"], "169.254.169.254 is link-local"),
        (["93.184.216.34", "10.0.0.7"], "10.0.0.7 is private"),  # every address is checked
        (["fd12::5"], "fd12::5 is private"),
    ],
)
def test_a_name_resolving_to_a_refused_address_is_refused_at_delivery(
    runtime: Runtime, answer: list[str], why: str
) -> None:
    """The name passes at creation; its DNS answer is refused at delivery, no
    connection is made, and the attempt is logged with the reason."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answer

    svc = service(runtime, allow_private=False, resolver=resolver)
    svc.add_endpoint("acme", "http://hooks.example.test/in", None, NOW)
    note_id = expire(runtime)
    report = run(svc, T)
    assert report.failed_attempts == 1
    assert report.errors == [f"refused: hooks.example.test resolves to {why}"]
    assert asked == ["hooks.example.test"]
    (view,) = svc.page("acme")
    (delivery,) = view.deliveries
    (attempt,) = delivery.tries
    assert (attempt.status_code, attempt.error) == (None, report.errors[0])
    assert status(runtime, note_id) == Delivery.PENDING


def test_localhost_is_refused_at_delivery_by_the_real_resolver(runtime: Runtime) -> None:
    svc = service(runtime, allow_private=False)
    svc.add_endpoint("acme", "http://localhost:9/hook", None, NOW)
    expire(runtime)
    (error,) = run(svc, T).errors
    assert error.startswith("refused: localhost resolves to") and "loopback" in error


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    """The backend connects to the address it checked (no second lookup: a name
    rebinding after the check cannot switch the target); HTTP still names the host."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a second lookup would see 10.9.9.9
    svc = service(runtime, resolver=lambda host, port: next(answers))
    svc.add_endpoint("acme", f"http://rebind.example.test:{receivers[0].port}/h", None, NOW)
    expire(runtime)
    assert run(svc, T).delivered == 1
    ((headers, _),) = receivers[0].requests
    assert headers["Host"] == f"rebind.example.test:{receivers[0].port}"


# -- several endpoints, attempts, redelivery ------------------------------------------------


def test_each_endpoint_gets_one_delivery_with_its_own_attempts(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    first, second = receivers
    second.statuses = [503]
    svc = service(runtime)
    svc.add_endpoint("acme", first.url, None, NOW)
    svc.add_endpoint("acme", second.url, None, NOW)
    note_id = expire(runtime)
    report = run(svc, T)
    assert (report.delivered, report.failed_attempts) == (1, 1)
    assert status(runtime, note_id) == Delivery.PENDING
    # Only the failed delivery is tried again, after its backoff.
    assert run(svc, T + FIRST_BACKOFF).delivered == 1
    assert (len(first.requests), len(second.requests)) == (1, 2)
    assert status(runtime, note_id) == Delivery.DELIVERED
    assert run(svc, T + timedelta(days=1)).delivered == 0
    (view,) = svc.page("acme")
    got = {d.url: [(a.number, a.status_code, a.error) for a in d.tries] for d in view.deliveries}
    assert got == {
        first.url: [(1, 200, None)],
        second.url: [(1, 503, "HTTP 503: "), (2, 200, None)],
    }
    assert all(a.duration_ms >= 0 for d in view.deliveries for a in d.tries)


def test_a_delivery_that_keeps_failing_fails_the_notification(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    receivers[0].statuses = [500] * 5
    svc = service(runtime, max_attempts=2)
    svc.add_endpoint("acme", receivers[0].url, None, NOW)
    svc.add_endpoint("acme", receivers[1].url, None, NOW)
    note_id = expire(runtime)
    run(svc, T)
    run(svc, T + timedelta(hours=2))
    assert status(runtime, note_id) == Delivery.FAILED
    (view,) = svc.page("acme", status="failed")
    assert sorted(d.status for d in view.deliveries) == ["delivered", "failed"]


def test_an_org_without_endpoints_is_no_webhook_and_others_orgs_endpoints_are_not_called(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    runtime.catalog.create_org("globex", "Globex", NOW)
    svc = service(runtime)
    svc.add_endpoint("globex", receivers[0].url, None, NOW)
    note_id = expire(runtime)
    assert run(svc, T).no_webhook == 1
    assert status(runtime, note_id) == Delivery.NO_WEBHOOK
    assert receivers[0].requests == []


def test_redeliver_queues_a_done_notification_once(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    svc = service(runtime)
    svc.add_endpoint("acme", receivers[0].url, None, NOW)
    note_id = expire(runtime)
    run(svc, T)
    later = T + timedelta(minutes=5)
    # An endpoint added since the first delivery gets it too.
    svc.add_endpoint("acme", receivers[1].url, None, later)
    assert svc.redeliver("acme", note_id, later) is True
    assert svc.redeliver("acme", note_id, later) is False  # pending: unchanged
    assert status(runtime, note_id) == Delivery.PENDING
    assert run(svc, later).delivered == 2
    assert [h["webhook-id"] for h, _ in receivers[0].requests] == [note_id, note_id]
    assert len(receivers[1].requests) == 1
    (view,) = svc.page("acme")
    assert sorted(len(d.tries) for d in view.deliveries) == [1, 2]


def test_redeliver_needs_an_endpoint_and_a_notification_of_the_org(runtime: Runtime) -> None:
    from meterd.core.errors import NotFoundError

    svc = service(runtime)
    note_id = expire(runtime)
    run(svc, T)
    with pytest.raises(ConflictError):
        svc.redeliver("acme", note_id, T)
    runtime.catalog.create_org("globex", "Globex", NOW)
    with pytest.raises(NotFoundError):
        svc.redeliver("globex", note_id, T)


def test_removing_an_endpoint_cancels_its_pending_delivery(
    runtime: Runtime, receivers: list[Receiver]
) -> None:
    receivers[0].statuses = [500]
    svc = service(runtime)
    made = svc.add_endpoint("acme", receivers[0].url, None, NOW)
    note_id = expire(runtime)
    run(svc, T)
    assert svc.remove_endpoint("acme", made.endpoint.id, T) is True
    assert svc.remove_endpoint("acme", made.endpoint.id, T) is False
    run(svc, T + FIRST_BACKOFF)
    assert len(receivers[0].requests) == 1
    assert status(runtime, note_id) == Delivery.DELIVERED  # nothing left to deliver
    (view,) = svc.page("acme")
    assert [d.status for d in view.deliveries] == ["cancelled"]
    assert svc.endpoints("acme") == []


def test_a_secret_must_be_whsec_base64_of_24_to_64_bytes(runtime: Runtime) -> None:
    svc = service(runtime)
    for bad in ("s3cret", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(InvalidError):
            svc.add_endpoint("acme", "https://hooks.example.com/", bad, NOW)
    good = "whsec_" + base64.b64encode(b"k" * 32).decode()
    made = svc.add_endpoint("acme", "https://hooks.example.com/", good, NOW)
    assert (made.secret, made.generated) == (good, False)


def test_the_org_webhook_shortcut_replaces_the_endpoints(runtime: Runtime) -> None:
    svc = service(runtime)
    svc.add_endpoint("acme", "https://a.example.com/", None, NOW)
    svc.add_endpoint("acme", "https://b.example.com/", None, NOW)
    assert svc.set_webhook("acme", "https://c.example.com/", None) is True
    assert [e.url for e in svc.endpoints("acme")] == ["https://c.example.com/"]
    assert svc.set_webhook("acme", None, None) is True
    assert svc.endpoints("acme") == []
    assert svc.set_webhook("nobody", "https://c.example.com/", None) is False
    with pytest.raises(InvalidError):
        service(runtime, allow_private=False).set_webhook("acme", "http://127.0.0.1/", None)


# -- attempts kept ----------------------------------------------------------------------


def failing(webhook: Any, msg_id: str, body: bytes) -> Sent:
    return Sent(500, "HTTP 500: ", 1)


def test_the_backoff_stays_an_hour_up_to_the_largest_max_attempts_allowed(
    runtime: Runtime,
) -> None:
    """METERD_WEBHOOK_MAX_ATTEMPTS goes up to 50; 2**43 times 10 s is past what a
    timedelta holds, so the doubling must stop before it does."""
    svc = NotificationService(runtime.notification_store, failing, max_attempts=50)
    assert svc.backoff(1) == FIRST_BACKOFF
    assert [svc.backoff(n) for n in (12, 44, 49)] == [MAX_BACKOFF] * 3
    assert svc.backoff(50) is None


def test_a_delivery_retried_100_times_keeps_its_first_and_latest_19_attempts(
    runtime: Runtime,
) -> None:
    svc = NotificationService(runtime.notification_store, failing, max_attempts=1000)
    svc.add_endpoint("acme", "https://down.example.com/", None, NOW)
    note_id = expire(runtime)
    for i in range(100):
        assert run(svc, T + i * timedelta(hours=2)).failed_attempts == 1
    (view,) = svc.page("acme")
    (delivery,) = view.deliveries
    assert [a.number for a in delivery.tries] == [1, *range(82, 101)]
    assert len(delivery.tries) == KEPT_ATTEMPTS
    assert (delivery.attempts, delivery.total_attempts) == (100, 100)
    assert status(runtime, note_id) == Delivery.PENDING


def test_attempts_keep_their_numbers_across_a_redelivery_and_the_bound_holds(
    runtime: Runtime,
) -> None:
    svc = NotificationService(runtime.notification_store, failing, max_attempts=15)
    svc.add_endpoint("acme", "https://down.example.com/", None, NOW)
    note_id = expire(runtime)
    at = T
    for _ in range(2):
        for _ in range(15):
            run(svc, at)
            at += timedelta(hours=2)
        assert status(runtime, note_id) == Delivery.FAILED
        assert svc.redeliver("acme", note_id, at)
    (delivery,) = svc.one("acme", note_id).deliveries
    assert [a.number for a in delivery.tries] == [1, *range(12, 31)]
    assert (delivery.attempts, delivery.total_attempts) == (0, 30)


def test_a_delivery_under_the_bound_keeps_every_attempt(runtime: Runtime) -> None:
    svc = NotificationService(runtime.notification_store, failing, max_attempts=1000)
    svc.add_endpoint("acme", "https://down.example.com/", None, NOW)
    expire(runtime)
    for i in range(KEPT_ATTEMPTS):
        run(svc, T + i * timedelta(hours=2))
    (delivery,) = svc.page("acme")[0].deliveries
    assert [a.number for a in delivery.tries] == list(range(1, KEPT_ATTEMPTS + 1))


# -- the cap on endpoints --------------------------------------------------------------


def test_an_org_has_at_most_20_live_endpoints_and_removed_ones_do_not_count(
    runtime: Runtime,
) -> None:
    svc = service(runtime)
    made = [svc.add_endpoint("acme", f"https://h{i}.example.com/", None, NOW) for i in range(20)]
    with pytest.raises(ConflictError, match="at most 20"):
        svc.add_endpoint("acme", "https://h20.example.com/", None, NOW)
    assert svc.remove_endpoint("acme", made[0].endpoint.id, NOW)
    svc.add_endpoint("acme", "https://h20.example.com/", None, NOW)
    assert len(svc.endpoints("acme")) == 20


def test_an_endpoint_of_an_org_that_does_not_exist_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(NotFoundError):
        service(runtime).add_endpoint("nobody", "https://h.example.com/", None, NOW)


def test_30_racing_creations_never_leave_more_than_20_endpoints(runtime: Runtime) -> None:
    """The count and the insert run under the org's lock: without it, racing calls
    all read 19 or fewer and all insert."""
    svc = service(runtime)
    start = threading.Barrier(30)
    outcomes: list[str] = []

    def create(i: int) -> None:
        start.wait()
        try:
            svc.add_endpoint("acme", f"https://h{i}.example.com/", None, NOW)
            outcomes.append("made")
        except ConflictError:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("made") == 20
    assert outcomes.count("refused") == 10
    assert len(svc.endpoints("acme")) == 20


# -- the migration of the org webhook ---------------------------------------------------


@pytest.fixture
def scratch_url(tmp_path: Path) -> Iterator[str]:
    if BACKEND != "real":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    admin = make_engine(REAL_PG_URL, isolation_level="AUTOCOMMIT")
    name = f"meterd_wh_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield REAL_PG_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migration_0015_makes_each_org_webhook_an_endpoint(scratch_url: str) -> None:
    command.upgrade(alembic_config(scratch_url), "0014")
    engine = make_engine(scratch_url)
    with engine.begin() as conn:
        for org, url, secret in (
            ("signed", "https://s.example.com/", "s3cret"),
            ("unsigned", "https://u.example.com/", None),
            ("none", None, None),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO organisations (id, name, last_entitlement_number, created_at,"
                    " webhook_url, webhook_secret) VALUES (:id, :id, 0, :at, :url, :secret)"
                ),
                {"id": org, "at": NOW, "url": url, "secret": secret},
            )
    upgrade(scratch_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT org_id, url, secret FROM webhook_endpoints ORDER BY org_id")
        ).all()
        left = conn.execute(
            sa.text("SELECT count(*) FROM organisations WHERE webhook_url IS NOT NULL")
        )
        assert left.scalar() == 0
    engine.dispose()
    assert [(r.org_id, r.url) for r in rows] == [
        ("signed", "https://s.example.com/"),
        ("unsigned", "https://u.example.com/"),
    ]
    # The key of before signs as before (its bytes); the unsigned one got a key.
    assert rows[0].secret == "whsec_" + base64.b64encode(b"s3cret").decode()
    assert len(base64.b64decode(rows[1].secret[len("whsec_") :])) == 24
    mac = hmac.new(b"s3cret", b"m.1.{}", hashlib.sha256).digest()
    assert sign(rows[0].secret, "m", 1, b"{}") == "v1," + base64.b64encode(mac).decode()
