"""API throughput under ``wrk``: the real-time value, reserve and hold endpoints,
each beside ``/healthz`` of the same server in the same run.

Creates a scratch PostgreSQL database and a Redis key prefix (db 11; both
removed afterwards), one hot customer with usage flushed and pending, then:

1. in-process: the value route's work (``BalanceService`` and the value rule,
   ``services.balance.value_of``), no HTTP, ``--calls`` times: p50/p99;
2. over loopback HTTP: ``meterd api`` (one uvicorn worker) in a subprocess, loaded
   by ``wrk`` (Debian package ``wrk``; ``--threads`` threads, ``--connections``
   keep-alive connections, ``--seconds`` each). Each round measures ``/healthz``
   (the reference: the framework answering with no work), then the value read,
   reserve (a new idempotency key per request, from a wrk Lua script) and hold +
   settle (a reserve with ``hold_seconds``, then the settle of the hold its answer
   names, on the same connection). Printed: requests/s and p99 of each, and its
   requests/s over the same round's ``/healthz``; beside them the API process's
   CPU time per request (user + system, from ``/proc``) and ``/healthz``'s over it,
   the ratio a CPU-bound worker shows, which moves less with the other load on a
   shared machine; each the median over ``--rounds``.

The bench key has a rate limit of 1,000,000 a second: every request still takes a
token from its bucket in Redis (the limiter's real cost), and none is refused.
Any non-2xx answer fails the bench.

    nice -n 10 python bench/api.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from meterd.core.domain import Balance
from meterd.core.timeutil import utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.services.balance import value_of
from meterd.services.catalog import NewEntitlement
from meterd.testing import answers, event, free_port, wait_until
from scratch import scratch_settings

VALUE_PATH = "/v1/customers/hot/features/api_calls"

#: Printed by every script at the end: one JSON line wrk's summary and latency fill.
_DONE = """
done = function(summary, latency, requests)
  local settled = 0
  for _, thread in ipairs(threads) do
    settled = settled + thread:get("settles")
  end
  io.write(string.format(
    '\\nWRK_JSON {"requests": %d, "seconds": %f, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p99_us": %d, "settles": %d}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), settled))
end
"""

_HEADERS = """
local counter = 0
settles = 0
local threads = {}
setup = function(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY")
wrk.headers["content-type"] = "application/json"
"""

SCRIPTS = {
    "get": _HEADERS + _DONE,
    "reserve": _HEADERS
    + """
request = function()
  counter = counter + 1
  local body = '{"quantity":"1","idempotency_key":"r-' .. thread_no .. '-' .. counter
    .. '-' .. os.time() .. '"}'
  return wrk.format("POST", wrk.path, nil, body)
end
"""
    + _DONE,
    # a reserve with hold_seconds, then the settle of the hold it names (same connection)
    "hold_settle": _HEADERS
    + """
local hold = nil
request = function()
  if hold ~= nil then
    local path = "/v1/holds/" .. hold .. "/settle"
    hold = nil
    settles = settles + 1
    return wrk.format("POST", path, nil, '{"quantity":"3"}')
  end
  counter = counter + 1
  local body = '{"quantity":"5","hold_seconds":60,"idempotency_key":"h-' .. thread_no
    .. '-' .. counter .. '-' .. os.time() .. '"}'
  return wrk.format("POST", wrk.path, nil, body)
end
response = function(status, headers, body)
  local id = string.match(body, '"hold":{"id":"([0-9a-f-]+)"')
  if id ~= nil then
    hold = id
  end
end
"""
    + _DONE,
}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str, script: Path, token: str, args: argparse.Namespace, server: int
) -> tuple[float, float, float]:
    """(requests/s, p99 ms, server CPU ms a request) of one wrk run; any non-2xx
    answer or socket error fails."""
    cpu_before = cpu_seconds(server)
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_API_KEY": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(server) - cpu_before
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    if result["non2xx"] or result["errors"]:
        raise SystemExit(f"wrk {url}: {result['non2xx']} non-2xx, {result['errors']} errors")
    if script.stem == "hold_settle" and result["settles"] < result["requests"] // 2 - 64:
        raise SystemExit(f"wrk {url}: {result['settles']} settles for {result['requests']}")
    rps = result["requests"] / result["seconds"]
    return rps, result["p99_us"] / 1000, cpu * 1000 / result["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="in-process calls")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians printed)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/api.py needs wrk (apt install wrk)")

    with scratch_settings("api") as settings, tempfile.TemporaryDirectory() as tmp:
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
            token, _ = rt.api_keys.create("bench", [Permission.ALL], now, rate_limit=1_000_000)

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

            scripts = {}
            for name, text in SCRIPTS.items():
                scripts[name] = Path(tmp) / f"{name}.lua"
                scripts[name].write_text(text)
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
            scenarios = (
                ("GET /healthz (reference: no work)", base + "/healthz", "get"),
                ("GET value", base + VALUE_PATH, "get"),
                ("POST reserve", base + VALUE_PATH + "/reserve", "reserve"),
                (
                    "hold + settle (2 requests a pair)",
                    base + VALUE_PATH + "/reserve",
                    "hold_settle",
                ),
            )
            warm = argparse.Namespace(**{**vars(args), "seconds": 2})
            for _, url, script in scenarios:  # warm up connections, caches, scripts
                run_wrk(url, scripts[script], token, warm, server.pid)
            rounds: dict[str, list[tuple[float, ...]]] = {s[0]: [] for s in scenarios}
            for _ in range(args.rounds):
                health = health_cpu = 0.0
                for label, url, script in scenarios:
                    rps, p99, cpu = run_wrk(url, scripts[script], token, args, server.pid)
                    health, health_cpu = health or rps, health_cpu or cpu
                    rounds[label].append((rps, p99, rps / health, cpu, health_cpu / cpu))

            print(f"\nin-process value (no HTTP), {args.calls:,} calls each:\n")
            print("| read | p50 ms | p99 ms |")
            print("|---|---:|---:|")
            for label, (p50, p99) in in_process.items():
                print(f"| {label} | {p50:.2f} | {p99:.2f} |")
            print(
                f"\nHTTP over loopback, 1 uvicorn worker, wrk -t{args.threads} "
                f"-c{args.connections} -d{args.seconds}s, median of {args.rounds} rounds"
                " (ratio: each round over its own /healthz; server CPU: the API process's"
                " user + system time over the requests it answered, and /healthz's over"
                " it, the ratio a CPU-bound worker would show, less sensitive to what else"
                " runs on the machine):\n"
            )
            print(
                "| endpoint | requests/s | p99 ms | requests/s / /healthz's | each round"
                " | server CPU ms/request | /healthz's CPU / its |"
            )
            print("|---|---:|---:|---:|---|---:|---:|")
            for label, results in rounds.items():
                rps, p99, share, cpu, cpu_share = (
                    statistics.median(r[i] for r in results) for i in range(5)
                )
                each = " ".join(f"{r[2]:.2f}" for r in results)
                print(
                    f"| {label} | {rps:,.0f} | {p99:.1f} | {share:.2f} | {each}"
                    f" | {cpu:.3f} | {cpu_share:.2f} |"
                )
            rt.close()
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)


if __name__ == "__main__":
    main()
