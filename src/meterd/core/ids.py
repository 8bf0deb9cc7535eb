"""Time-ordered identifiers (UUIDv7, RFC 9562) for rows written in bulk.

Random UUIDv4 keys land all over a B-tree index, so inserting a lifecycle
batch of 100,000 audit rows touches pages everywhere. UUIDv7 keys start with
the millisecond, so a batch appends at the right edge of the index instead.
"""

from __future__ import annotations

import os
import time
import uuid

_MS_MASK = (1 << 48) - 1
_RAND_A_MASK = (1 << 12) - 1
_RAND_B_MASK = (1 << 62) - 1


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & _MS_MASK) << 80
        | 0x7 << 76
        | ((rand >> 62) & _RAND_A_MASK) << 64
        | 0b10 << 62
        | (rand & _RAND_B_MASK)
    )
    return uuid.UUID(int=value)
