"""The whole Redis key layout of meterd, in one place.

Per-customer keys carry the hash tag ``{org:len:customer}`` so that one
customer's keys share a Redis Cluster slot. The customer id is
length-prefixed and the org id cannot contain ``:``, so two different
(org, customer) pairs can never produce the same key. Sources are
length-prefixed for the same reason (CloudEvents sources are URIs full of
colons).

The table of every key, its type and its fields is in docs/architecture.md
("Redis keys"), held to what a run writes by tests/test_redis_key_table.py; a key
built anywhere but here fails tests/test_redis_key_map.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from meterd.core.timeutil import epoch_micros

#: The used hash's field of a level period's version (``v:<ent>:<period>``): its
#: prefix, and the pattern that matches every one.
LEVEL_VERSION_PREFIX = "v:"
LEVEL_VERSION_PATTERN = "v:*"


def period_field(entitlement_id: uuid.UUID, period_start: datetime) -> str:
    """The hash field naming one usage period of one entitlement."""
    return f"{entitlement_id.hex}:{epoch_micros(period_start)}"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def tag(self, org: str, customer: str) -> str:
        return f"{{{org}:{len(customer)}:{customer}}}"

    @property
    def marker_prefix(self) -> str:
        return f"{self.prefix}:dm:"

    def marker_generation(self, generation: int | str) -> str:
        """The meta hash of marker generation ``generation`` (ingest.lua builds the
        same key from ``marker_prefix``, passed as ARGV)."""
        return f"{self.marker_prefix}{generation}"

    def marker_shard(self, generation: int | str, shard: int) -> str:
        """One set of marker digests of a generation (ingest.lua: ``shard_key``)."""
        return f"{self.marker_generation(generation)}:{shard}"

    @property
    def marker_generations(self) -> str:
        return f"{self.prefix}:dm:generations"

    @property
    def big_counters(self) -> str:
        """The running-total fields above 2^52 units (ingest.lua reads only these
        before checking that a count stays within 2^53 - 1)."""
        return f"{self.prefix}:used:big"

    @property
    def pending_events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def flush_events(self) -> str:
        return f"{self.prefix}:flush:events"

    @property
    def flush_seq(self) -> str:
        return f"{self.prefix}:flush:seq"

    @property
    def flush_pause(self) -> str:
        """Set while a correction recounts a level period: no flush batch begins."""
        return f"{self.prefix}:flush:pause"

    def resolution(self, org: str, customer: str, feature: str) -> str:
        return f"{self.prefix}:res:{self.tag(org, customer)}:{feature}"

    def used(self, org: str, customer: str) -> str:
        return f"{self.prefix}:used:{self.tag(org, customer)}"

    def unique_values(self, org: str, customer: str, field: str) -> str:
        """The values a UNIQUE_COUNT period counted (ingest.lua: ``unique_key``, built
        from the used key it is passed)."""
        return f"{self.used(org, customer)}:u:{field}"

    def customer_holds(self, org: str, customer: str) -> str:
        """The customer's live holds, hold key -> expiry (ingest/holds.lua:
        ``holds_key``, built from the used key it is passed)."""
        return f"{self.used(org, customer)}:holds"

    def hold(self, org: str, hold_id: uuid.UUID) -> str:
        """One hold's record (ingest/holds.lua documents its fields)."""
        return f"{self.prefix}:hold:{org}:{hold_id.hex}"

    @property
    def holds_due(self) -> str:
        """Used key -> the earliest expiry of its live holds (the expiry job's list)."""
        return f"{self.prefix}:holds:due"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def pending_since(self) -> str:
        return f"{self.prefix}:pending:since"

    @property
    def flush_batch_since(self) -> str:
        return f"{self.prefix}:flush:batch:since"

    def stats(self, name: str) -> str:
        return f"{self.prefix}:stats:{name}"

    @property
    def flush_batch(self) -> str:
        return f"{self.prefix}:flush:batch"

    @property
    def flush_inflight(self) -> str:
        return f"{self.prefix}:flush:inflight"

    @property
    def flush_epoch(self) -> str:
        return f"{self.prefix}:flush:epoch"

    @property
    def data_format(self) -> str:
        """The version of the data format the stored data is in (``storage/data_format.py``)."""
        return f"{self.prefix}:format"

    @property
    def meter_versions(self) -> str:
        return f"{self.prefix}:meters:versions"

    @property
    def redbeat_prefix(self) -> str:
        """The prefix of RedBeat's schedule and lock keys (``redbeat_key_prefix``)."""
        return f"{self.prefix}:redbeat:"

    def rate_limit(self, key_id: str) -> str:
        """An API key's token bucket (key ids are 16 hex digits)."""
        return f"{self.prefix}:rl:{key_id}"

    @property
    def all_pattern(self) -> str:
        """Matches every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"
