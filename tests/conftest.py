"""Test fixtures: every service test runs over the configured backend.

``METERD_TEST_BACKEND=default`` (the default): fakeredis + a SQLite file.
``METERD_TEST_BACKEND=real``: the machine's Redis (db 9, a unique key prefix,
only our keys cleaned up) and PostgreSQL (a fresh database per run, dropped
at the end); a test over no configured store runs only in the default one
(``pytest_collection_modifyitems``). When a real service is needed but missing, tests skip on a
laptop and fail in CI (``CI=true``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from meterd import runtime as runtime_module
from meterd.config import Settings, get_settings
from meterd.runtime import Runtime
from meterd.storage.database import Database, make_engine
from meterd.storage.migrate import upgrade
from meterd.storage.models import Base

BACKEND = os.environ.get("METERD_TEST_BACKEND", "default")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REAL_REDIS_URL = os.environ.get("METERD_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
REAL_PG_URL = os.environ.get("METERD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: The tests' frozen clock: the services take ``now``, and tests pass NOW. Two things
#: do not run on it, so a test that mixes them with NOW passes only until some date:
#: * the API, the CLI and the workers read the real clock: for them an event dated NOW
#:   is late 35 days after NOW, and a grant ending at NOW+20d has ended;
#: * Redis, real or fake, expires a key by its own clock: a UNIQUE_COUNT set expires
#:   at an absolute time (a day after its period's late window), so a set dated from
#:   NOW is deleted as it is written once that time has passed.
#: Date such a test from the real clock (``utcnow()``; ``helpers.grant(..., now=...)``
#: records a grant as created then), and run the suite with the clock moved ahead:
#: ``.ci/clock-ahead +365d python -m pytest`` (CI does).
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


#: What lets a test see the configured backend: a fixture that builds a store over it
#: (every store fixture depends on one of these), or a module that reads it itself.
_STORE_FIXTURES = frozenset({"database_url", "redis_client"})
_BACKEND_NAMES = ("BACKEND", "REAL_PG_URL", "REAL_REDIS_URL", "real_redis_client")


def uses_configured_store(item: pytest.Item, module_text: dict[Path, bool]) -> bool:
    """Whether ``item`` runs over the configured backend: a store fixture in its
    closure, or a module naming the backend (``module_text`` caches that per file)."""
    if _STORE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    path = Path(item.path)
    if path not in module_text:
        text = path.read_text(encoding="utf-8")
        module_text[path] = any(name in text for name in _BACKEND_NAMES)
    return module_text[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the real configuration, run only the tests that see it: a test over no
    configured store (pure rules, Lua fragments, the CLI's own fakeredis, ...) runs
    word for word the same in both, and runs once, in the default configuration
    (as ``tests/e2e/conftest.ONCE_IN_DEFAULT`` does for whole e2e modules)."""
    if BACKEND != "real":
        return
    module_text: dict[Path, bool] = {}
    kept, once = [], []
    for item in items:
        in_e2e = "e2e" in Path(item.path).parts
        (kept if in_e2e or uses_configured_store(item, module_text) else once).append(item)
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = kept


def require(service: str, error: Exception) -> None:
    """Missing real service: fail in CI, skip elsewhere."""
    message = f"{service} is not reachable: {error}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def real_redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REAL_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        require("Redis at " + REAL_REDIS_URL, exc)
    return client


def delete_keys(client: redis.Redis, pattern: str) -> None:
    batch = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(batch), 500):
        client.delete(*batch[start : start + 500])


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database for this test run."""
    if BACKEND == "real":
        admin = make_engine(REAL_PG_URL, isolation_level="AUTOCOMMIT")
        name = f"meterd_test_{uuid.uuid4().hex[:10]}"
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            require("PostgreSQL at " + REAL_PG_URL, exc)
        url = REAL_PG_URL.rsplit("/", 1)[0] + "/" + name
        upgrade(url)
        yield url
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = Path(tmp_path_factory.mktemp("db")) / "meterd.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database.connect(database_url)
    yield db
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    db.dispose()


@pytest.fixture
def redis_prefix() -> str:
    return f"mt-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[redis.Redis]:
    if BACKEND == "real":
        client = real_redis_client()
        yield client
        delete_keys(client, f"{redis_prefix}:*")
        client.close()
    else:
        import fakeredis

        client = fakeredis.FakeRedis()
        yield client
        client.close()


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REAL_REDIS_URL,
        redis_prefix=redis_prefix,
        batch_size=100,
        # The machine's shared Redis runs without AOF (see PITFALLS): it fails the
        # safety check, so the real configuration runs as METERD_UNSAFE_REDIS=1 would.
        # fakeredis passes the check as a test double.
        unsafe_redis=BACKEND == "real",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def runtime(settings: Settings, redis_client: redis.Redis, database: Database) -> Runtime:
    """Stores and services wired as in production, over the test backend."""
    rt = Runtime(settings=settings, redis=redis_client, database=database)
    rt.catalog.create_org("acme", "Acme", NOW)
    rt.catalog.create_feature("acme", "api_calls", now=NOW, units="calls")
    return rt


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_prefix: str) -> Iterator[None]:
    """The CLI's settings from the environment: a SQLite file and one fakeredis
    server for every runtime the commands build."""
    import fakeredis

    monkeypatch.setenv("METERD_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("METERD_REDIS_URL", "redis://fake:6379/0")
    monkeypatch.setenv("METERD_REDIS_PREFIX", redis_prefix)
    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        runtime_module, "redis_client_for", lambda _s: fakeredis.FakeRedis(server=server)
    )
    get_settings.cache_clear()
    runtime_module.reset_runtime()
    yield
    runtime_module.reset_runtime()
    get_settings.cache_clear()
