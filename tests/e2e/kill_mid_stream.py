"""Redis killed -9 in the middle of a stream of calls that a client retries: the
shape of every Redis-kill test (ingest batches, settles, voids)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .servers import OwnRedis

T = TypeVar("T")


@dataclass(frozen=True)
class KilledStream:
    #: Calls done when Redis was killed.
    killed_after: int
    #: Calls that failed and were retried.
    retries: int
    #: Calls that answered one of the ``settled`` errors (done before a failure was
    #: seen: a void already void, say).
    settled: int


def kill_mid_stream(
    own_redis: OwnRedis,
    items: Sequence[T],
    call: Callable[[T], object],
    *,
    kill_after: int,
    settled: tuple[type[BaseException], ...] = (),
    pause: float = 0.02,
    down: float = 0.3,
) -> KilledStream:
    """Run ``call`` on each item in a thread, each retried until it succeeds (or
    raises one of ``settled``), and kill Redis -9 once ``kill_after`` are done; it
    comes back ``down`` seconds later. The caller asserts the kill landed mid-stream
    (``killed_after < len(items)``) and that some call was retried."""
    done = 0
    retries = 0
    answered = 0

    def run() -> None:
        nonlocal done, retries, answered
        for item in items:
            while True:
                try:
                    call(item)
                    break
                except settled:
                    answered += 1
                    break
                except Exception:
                    retries += 1
                    time.sleep(pause)
            done += 1

    thread = threading.Thread(target=run)
    thread.start()
    while done < kill_after:
        time.sleep(0.005)
    own_redis.kill()
    killed_after = done
    time.sleep(down)
    own_redis.start()
    thread.join(timeout=180)
    return KilledStream(killed_after, retries, answered)
