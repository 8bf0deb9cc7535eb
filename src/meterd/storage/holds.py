"""The hold store: reading, releasing and expiring holds in Redis.

A hold is made and settled by ``ingest.lua`` (atomically with every other count,
see ``CounterStore.add_batch``); this store reads a hold's record, releases it
(``hold_release.lua``), reads a customer's consumed and held units after freeing
the holds past their expiry (``holds_read.lua``: the value read), and frees the
expired holds of customers nobody read since (``holds_expire.lua``: a tidy-up
job; no answer waits for it). Holds live only in Redis: they are bets on work in
flight, gone an hour after they end, while what is settled is usage like any
other (flushed, logged).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from meterd.core.holds import HoldMeta, HoldStatus
from meterd.core.redis_keys import RedisKeys
from meterd.core.timeutil import epoch_micros, from_epoch_micros
from meterd.lua import script_source
from meterd.storage.counters import CounterStoreError


@dataclass(frozen=True, slots=True)
class StoredHold:
    """A hold's record as Redis keeps it (``status`` as recorded: see
    ``core.holds.status_at`` for the status at an instant)."""

    id: uuid.UUID
    status: HoldStatus
    #: Units held, of the feature's scale (``meta.scale``).
    units: int
    expires_at: datetime
    meta: HoldMeta
    #: "<field>=<units>" of each period the hold keeps units on.
    allocation: tuple[tuple[str, int], ...]
    #: What was settled, in units (settled holds only), and when it ended.
    settled_units: int | None
    ended_at: datetime | None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _stored_hold(org: str, hold_id: uuid.UUID, raw: dict[bytes, bytes]) -> StoredHold | None:
    """The hold of ``org`` in its record ``raw`` (HGETALL), or None: no such hold."""
    if not raw or b"s" not in raw or b"m" not in raw:
        return None
    record = {k.decode(): v.decode() for k, v in raw.items()}
    meta = HoldMeta.decode(record["m"])
    if meta.org != org:
        return None
    allocation = tuple(
        (field, int(units))
        for field, _, units in (part.rpartition("=") for part in record["a"].split(",") if part)
    )
    settled = record.get("sq")
    ended = record.get("at")
    return StoredHold(
        id=hold_id,
        status=HoldStatus(record["s"]),
        units=int(record["q"]),
        expires_at=from_epoch_micros(int(record["e"])),
        meta=meta,
        allocation=allocation,
        settled_units=None if settled is None else int(settled),
        ended_at=None if ended is None else from_epoch_micros(int(ended)),
    )


class HoldStore:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self._release = client.register_script(script_source("hold_release.lua"))
        self._read = client.register_script(script_source("holds_read.lua"))
        self._expire = client.register_script(script_source("holds_expire.lua"))

    def get(self, org: str, hold_id: uuid.UUID) -> StoredHold | None:
        try:
            raw = self.client.hgetall(self.keys.hold(org, hold_id))
        except redis.RedisError as exc:
            raise CounterStoreError(f"reading a hold failed: {exc}") from exc
        return _stored_hold(org, hold_id, cast(dict[bytes, bytes], raw))

    def get_command(
        self, org: str, hold_id: uuid.UUID
    ) -> tuple[Callable[[Any], None], Callable[[Any], StoredHold | None]]:
        """``get`` in two halves, for a caller sending it in one round trip with
        another command (the API's rate limit): ``command(pipeline)`` queues the
        read, ``reply(r)`` reads its reply ``r`` (raising ``CounterStoreError`` when
        ``r`` is an error, as ``get``)."""
        key = self.keys.hold(org, hold_id)

        def command(pipeline: Any) -> None:
            pipeline.hgetall(key)

        def reply(raw: Any) -> StoredHold | None:
            if isinstance(raw, Exception):
                raise CounterStoreError(f"reading a hold failed: {raw}")
            return _stored_hold(org, hold_id, cast(dict[bytes, bytes], raw))

        return command, reply

    def release(self, hold: StoredHold, now: datetime) -> HoldStatus | None:
        """Give the hold's units back; the status after the call (None: it is gone)."""
        k = self.keys
        try:
            result = self._release(
                keys=[
                    k.hold(hold.meta.org, hold.id),
                    k.used(hold.meta.org, hold.meta.customer),
                    k.holds_due,
                ],
                args=[epoch_micros(now)],
            )
        except redis.RedisError as exc:
            raise CounterStoreError(f"releasing a hold failed: {exc}") from exc
        text = result.decode() if isinstance(result, bytes) else str(result)
        return HoldStatus(text) if text else None

    def live_figures(
        self, org: str, customer: str, fields: Sequence[str], now: datetime
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Consumed and held units of some periods of a customer, read after freeing
        the holds past their expiry, in one atomic step."""
        if not fields:
            return {}, {}
        try:
            raw = cast(
                list[bytes],
                self._read(keys=self._read_keys(org, customer), args=[epoch_micros(now), *fields]),
            )
        except redis.RedisError as exc:
            raise CounterStoreError(f"reading live totals failed: {exc}") from exc
        return _figures(fields, raw)

    def live_figures_command(
        self, org: str, customer: str, fields: Sequence[str], now: datetime
    ) -> tuple[Callable[[Any], None], Callable[[Any], tuple[dict[str, int], dict[str, int]]]]:
        """``live_figures`` in two halves, for a caller sending it in one round trip
        with another command (the API's rate limit): ``command(pipeline)`` queues
        the read on a pipeline of ``client``, ``reply(r)`` reads its reply ``r`` (or
        raises ``CounterStoreError`` when ``r`` is an error, as ``live_figures``).
        ``fields`` must not be empty."""
        keys = self._read_keys(org, customer)
        args = [epoch_micros(now), *fields]

        def command(pipeline: Any) -> None:
            # EVALSHA: a Script object in a pipeline asks SCRIPT EXISTS on every call
            pipeline.evalsha(self._read.sha, len(keys), *keys, *args)

        def reply(raw: Any) -> tuple[dict[str, int], dict[str, int]]:
            if isinstance(raw, redis.exceptions.NoScriptError):  # a restarted Redis
                return self.live_figures(org, customer, fields, now)
            if isinstance(raw, redis.RedisError):
                raise CounterStoreError(f"reading live totals failed: {raw}")
            return _figures(fields, cast(list[bytes], raw))

        return command, reply

    def _read_keys(self, org: str, customer: str) -> list[str]:
        return [self.keys.used(org, customer), self.keys.holds_due]

    def expire_due(self, now: datetime, per_call: int = 500, max_calls: int = 100) -> int:
        """Free the holds past their expiry of customers nobody read since; returns
        how many customers were looked at (bounded: ``per_call * max_calls``)."""
        seen = 0
        for _ in range(max_calls):
            try:
                n = int(
                    self._expire(keys=[self.keys.holds_due], args=[epoch_micros(now), per_call])
                )
            except redis.RedisError as exc:
                raise CounterStoreError(f"expiring holds failed: {exc}") from exc
            seen += n
            if n < per_call:
                break
        return seen


def _figures(fields: Sequence[str], raw: list[bytes]) -> tuple[dict[str, int], dict[str, int]]:
    n = len(fields)
    consumed = {f: int(v) for f, v in zip(fields, raw[:n], strict=True)}
    held = {f: int(v) for f, v in zip(fields, raw[n:], strict=True)}
    return consumed, held
