"""API latency and throughput: the real-time value, reserve and hold endpoints.

Creates a scratch PostgreSQL database and a Redis key prefix (db 11; both
removed afterwards), one hot customer with usage flushed and pending, then:

1. in-process: the value route's work (``BalanceService`` and the value rule,
   ``services.balance.value_of``), no HTTP, ``--calls`` times: p50/p99;
2. over loopback HTTP: ``meterd api`` (uvicorn, one worker) in a subprocess and
   ``--clients`` threads with keep-alive connections, for the value endpoint
   then the reserve endpoint (each call a new idempotency key), then a hold and
   its settle (two requests: ``reserve`` with ``hold_seconds``, ``settle``), and the
   same server's ``/healthz`` as the reference measured in the same run (its
   requests/s is what one uvicorn worker answers with no work at all): requests/s,
   p50/p99, and each endpoint's requests/s as a share of ``/healthz``'s.

    python bench/api.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import httpx

from meterd.core.domain import Balance
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.balance import value_of
from meterd.services.catalog import NewEntitlement
from meterd.testing import answers, event, free_port, wait_until
from scratch import scratch_settings


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000


def load(
    base: str, headers: dict[str, str], clients: int, seconds: float, call: Callable[..., None]
) -> tuple[float, list[float]]:
    """Run ``call(client, n)`` from ``clients`` threads for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        mine = []
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            n = 0
            while time.perf_counter() < stop:
                start = time.perf_counter()
                call(client, f"{index}-{n}")
                mine.append(time.perf_counter() - start)
                n += 1
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="in-process calls")
    parser.add_argument("--clients", type=int, default=16, help="HTTP client threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP scenario")
    args = parser.parse_args()

    with scratch_settings("api") as settings:
        server: subprocess.Popen[bytes] | None = None
        try:
            rt = Runtime.from_settings(settings)
            now = utcnow()
            rt.catalog.create_org("bench", "bench", now)
            rt.catalog.create_feature("bench", "api_calls", now=now)
            rt.catalog.create_entitlement(
                NewEntitlement(
                    org="bench",
                    customer_id="hot",
                    feature="api_calls",
                    quantity=Decimal(10**9),
                    starts_at=now,
                    ends_at=None,
                ),
                now,
            )
            rt.ingest.ingest([event("hot", "5", org="bench", event_id="a", time=now)], now=now)
            rt.flush.flush_all(now)
            rt.ingest.ingest([event("hot", "2", org="bench", event_id="b", time=now)], now=now)
            token, _ = rt.api_keys.create("bench", [Permission.ALL], now)

            def live() -> list[Balance]:
                return rt.balance.current("bench", "hot", "api_calls", utcnow())

            def database() -> list[Balance]:
                return rt.balance.balances("bench", "hot", "api_calls", utcnow())

            in_process = {}
            for label, read in (
                ("live (Redis only, what the route does)", live),
                ("database + Redis (the fallback)", database),
            ):
                timings = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    value_of(read())
                    timings.append(time.perf_counter() - start)
                in_process[label] = percentiles(timings)

            port = free_port()
            env = {
                **os.environ,
                "METERD_DATABASE_URL": settings.database_url,
                "METERD_REDIS_URL": settings.redis_url,
                "METERD_REDIS_PREFIX": settings.redis_prefix,
                "METERD_UNSAFE_REDIS": "1",  # the machine's Redis has no AOF
            }
            server = subprocess.Popen(
                [sys.executable, "-m", "meterd.cli", "api", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: answers(base + "/healthz"), 30, "the API to start")
            headers = {"x-api-key": token}
            value_path = "/v1/customers/hot/features/api_calls"

            def value(client: httpx.Client, _: str) -> None:
                client.get(value_path).raise_for_status()

            def reserve(client: httpx.Client, key: str) -> None:
                body = {"quantity": "1", "idempotency_key": key}
                response = client.post(value_path + "/reserve", json=body)
                response.raise_for_status()
                assert response.json()["granted"]

            def hold_and_settle(client: httpx.Client, key: str) -> None:
                body = {"quantity": "5", "idempotency_key": key, "hold_seconds": 60}
                response = client.post(value_path + "/reserve", json=body)
                response.raise_for_status()
                hold = response.json()["hold"]
                settled = client.post(f"/v1/holds/{hold['id']}/settle", json={"quantity": "3"})
                settled.raise_for_status()

            def healthz(client: httpx.Client, _: str) -> None:
                client.get("/healthz").raise_for_status()

            load(base, headers, 4, 1.0, value)  # warm up connections and caches
            health_rps, health_lat = load(base, headers, args.clients, args.seconds, healthz)
            value_rps, value_lat = load(base, headers, args.clients, args.seconds, value)
            reserve_rps, reserve_lat = load(base, headers, args.clients, args.seconds, reserve)
            pair_rps, pair_lat = load(base, headers, args.clients, args.seconds, hold_and_settle)

            print(f"\nin-process value (no HTTP), {args.calls:,} calls each:\n")
            print("| read | p50 ms | p99 ms |")
            print("|---|---:|---:|")
            for label, (p50, p99) in in_process.items():
                print(f"| {label} | {p50:.2f} | {p99:.2f} |")
            print(f"\nHTTP over loopback, 1 uvicorn worker, {args.clients} client threads:\n")
            print("| endpoint | requests/s | p50 ms | p99 ms | requests/s / /healthz's |")
            print("|---|---:|---:|---:|---:|")
            for label, rps, lat, per_op in (
                ("GET /healthz (reference: no work)", health_rps, health_lat, 1),
                ("GET value", value_rps, value_lat, 1),
                ("POST reserve", reserve_rps, reserve_lat, 1),
                ("hold + settle (2 requests; latency of the pair)", pair_rps, pair_lat, 2),
            ):
                p50, p99 = percentiles(lat)
                share = rps * per_op / health_rps
                print(f"| {label} | {rps * per_op:,.0f} | {p50:.1f} | {p99:.1f} | {share:.2f} |")
            print(f"\nhold + settle pairs/s: {pair_rps:,.0f}")
            rt.close()
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)


if __name__ == "__main__":
    main()
