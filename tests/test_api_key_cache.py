"""The per-process cache of verified API keys: ``ApiKeyService.cached`` answers a
key this process verified within ``CACHE_SECONDS`` with no I/O (the API calls it on
its event loop), and a key revoked or rotated through another process stops
working here within ``CACHE_SECONDS``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meterd.runtime import Runtime
from meterd.services.api_keys import (
    CACHE_SECONDS,
    TOUCH_SECONDS,
    ApiKeyExpired,
    ApiKeyService,
    Permission,
)
from meterd.storage.api_keys import ApiKeyStore, StoredKey

from .conftest import NOW


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(ApiKeyStore):
    """The key store, counting the lookups that reach the database."""

    finds = 0

    def find(self, key_id: str) -> StoredKey | None:
        self.finds += 1
        return super().find(key_id)


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


def process(runtime: Runtime, clock: Monotonic) -> tuple[ApiKeyService, CountingStore]:
    """An API process of its own: its own cache, the same database."""
    store = CountingStore(runtime.database.sessions)
    return ApiKeyService(store, clock, wall=lambda: NOW), store


def test_a_key_verified_here_is_answered_from_the_cache_without_the_database(
    runtime: Runtime, clock: Monotonic
) -> None:
    keys, store = process(runtime, clock)
    token, row = keys.create("acme", [Permission.ALL], NOW)
    assert keys.authenticate(token) is not None
    finds = store.finds
    clock.now += CACHE_SECONDS - 0.001
    cached = keys.cached(token)
    assert cached is not None and cached.key_id == row.id
    assert store.finds == finds


def test_a_key_never_verified_here_is_not_in_the_cache(runtime: Runtime, clock: Monotonic) -> None:
    keys, _ = process(runtime, clock)
    token, _ = keys.create("acme", [Permission.ALL], NOW)
    assert keys.cached(token) is None
    assert keys.cached("mk_not_a_key") is None


def test_the_cache_stops_vouching_for_a_key_after_cache_seconds(
    runtime: Runtime, clock: Monotonic
) -> None:
    keys, _ = process(runtime, clock)
    token, _ = keys.create("acme", [Permission.ALL], NOW)
    keys.authenticate(token)
    clock.now += CACHE_SECONDS
    assert keys.cached(token) is None


def test_the_cache_stops_vouching_for_a_key_whose_last_use_is_due_to_be_written(
    runtime: Runtime, clock: Monotonic
) -> None:
    keys, _ = process(runtime, clock)
    token, _ = keys.create("acme", [Permission.ALL], NOW)
    keys.authenticate(token)
    keys._touched.clear()  # as TOUCH_SECONDS after the last write, in a cache still fresh
    assert TOUCH_SECONDS > CACHE_SECONDS
    assert keys.cached(token) is None


def test_a_cached_key_past_its_expiry_is_refused(runtime: Runtime, clock: Monotonic) -> None:
    wall = [NOW]
    keys = ApiKeyService(ApiKeyStore(runtime.database.sessions), clock, wall=lambda: wall[0])
    token, _ = keys.create("acme", [Permission.ALL], NOW, expires_at=NOW + timedelta(seconds=30))
    keys.authenticate(token)
    wall[0] = NOW + timedelta(seconds=30)
    with pytest.raises(ApiKeyExpired):
        keys.cached(token)


def test_a_key_revoked_through_this_process_leaves_its_cache_at_once(
    runtime: Runtime, clock: Monotonic
) -> None:
    keys, _ = process(runtime, clock)
    token, row = keys.create("acme", [Permission.ALL], NOW)
    keys.authenticate(token)
    keys.revoke(row.id, NOW)
    assert keys.cached(token) is None
    assert keys.authenticate(token) is None


def test_a_key_revoked_through_another_process_stops_working_here_within_cache_seconds(
    runtime: Runtime, clock: Monotonic
) -> None:
    (here, _), (there, _) = process(runtime, clock), process(runtime, clock)
    token, row = here.create("acme", [Permission.ALL], NOW)
    here.authenticate(token)
    there.revoke(row.id, NOW)
    clock.now += CACHE_SECONDS - 0.001
    assert here.cached(token) is not None  # the bound: until CACHE_SECONDS, not after
    clock.now += 0.001
    assert here.cached(token) is None
    assert here.authenticate(token) is None


def test_a_key_rotated_through_another_process_stops_working_here_within_cache_seconds(
    runtime: Runtime, clock: Monotonic
) -> None:
    wall = [NOW]
    here = ApiKeyService(ApiKeyStore(runtime.database.sessions), clock, wall=lambda: wall[0])
    there = ApiKeyService(ApiKeyStore(runtime.database.sessions), clock, wall=lambda: wall[0])
    token, row = here.create("acme", [Permission.ALL], NOW)
    here.authenticate(token)
    there.rotate(row.id, NOW + timedelta(seconds=1), NOW)
    wall[0] = NOW + timedelta(seconds=1)  # the old key's end
    clock.now += 1
    assert here.cached(token) is not None  # cached before the rotation: for CACHE_SECONDS
    clock.now += CACHE_SECONDS - 1
    assert here.cached(token) is None
    with pytest.raises(ApiKeyExpired):
        here.authenticate(token)
