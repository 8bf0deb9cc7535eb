"""The whole Redis key layout of meterd, in one place.

Per-customer keys carry the hash tag ``{org:len:customer}`` so that one
customer's keys share a Redis Cluster slot. The customer id is
length-prefixed and the org id cannot contain ``:``, so two different
(org, customer) pairs can never produce the same key. Sources are
length-prefixed for the same reason (CloudEvents sources are URIs full of
colons).

===============================  ======  =====================================================
key                              type    holds
===============================  ======  =====================================================
``P:dd:{org}:<n>:<src>:<id>``    string  dedupe marker of an accepted event (expires)
``P:res:{tag}:<feature>``        string  JSON resolution data: the customer's entitlements
``P:used:{tag}``                 hash    ``<ent>:<period>`` -> consumed micro-units (all time)
``P:pending``                    hash    ``<ent>:<period>`` -> micro-units not yet in the DB
``P:flush:batch``                hash    the pending hash, renamed while a flush is in flight
``P:flush:inflight``             string  id of the batch in ``flush:batch``
``P:flush:epoch``                string  counts flush starts (lets readers detect a race)
``P:pending:since``              string  epoch us of the pending hash's first write (flush lag)
``P:flush:batch:since``          string  the same, for the batch in flight
``P:stats:*``                    hash    counters and histograms for metrics (see stats.py)
===============================  ======  =====================================================
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from meterd.timeutil import epoch_micros


def period_field(entitlement_id: uuid.UUID, period_start: datetime) -> str:
    """The hash field naming one usage period of one entitlement."""
    return f"{entitlement_id.hex}:{epoch_micros(period_start)}"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def tag(self, org: str, customer: str) -> str:
        return f"{{{org}:{len(customer)}:{customer}}}"

    def dedupe(self, org: str, source: str, event_id: str) -> str:
        return f"{self.prefix}:dd:{{{org}}}:{len(source)}:{source}:{event_id}"

    def resolution(self, org: str, customer: str, feature: str) -> str:
        return f"{self.prefix}:res:{self.tag(org, customer)}:{feature}"

    def used(self, org: str, customer: str) -> str:
        return f"{self.prefix}:used:{self.tag(org, customer)}"

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
    def all_pattern(self) -> str:
        """Matches every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"
