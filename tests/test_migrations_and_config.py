"""The schema the migrations build is the schema the models describe; Celery is
configured for at-least-once delivery."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from meterd.celery_config import FLUSH_QUEUE, INGEST_QUEUE, celery_config
from meterd.config import Settings
from meterd.storage.database import make_engine
from meterd.storage.models import Base, compared_in_schema


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": compared_in_schema})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def settings(**kwargs: object) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg, arg-type]


def test_tasks_are_acknowledged_only_after_the_work() -> None:
    conf = celery_config(settings(redis_url="redis://127.0.0.1:6379/0"))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["task_serializer"] == "json"


def test_tasks_are_routed_to_the_contract_queues() -> None:
    routes = celery_config(settings(redis_url="redis://h:6379/0"))["task_routes"]
    assert routes["meterd.ingest_batch"] == {"queue": INGEST_QUEUE} == {"queue": "meterd.ingest"}
    assert routes["meterd.flush"] == {"queue": FLUSH_QUEUE} == {"queue": "meterd.flush"}


def test_beat_flushes_every_flush_interval() -> None:
    schedule = celery_config(settings(redis_url="redis://h:6379/0", flush_interval=2.5))[
        "beat_schedule"
    ]
    assert schedule["meterd.flush"]["task"] == "meterd.flush"
    assert schedule["meterd.flush"]["schedule"] == 2.5


def test_broker_defaults_to_the_redis_url_through_the_reliable_transport() -> None:
    url = celery_config(settings(redis_url="redis://h:6379/3"))["broker_url"]
    assert url == "meterd-redis://h:6379/3"


def test_broker_can_be_amqp() -> None:
    amqp = settings(redis_url="redis://h:6379/3", broker_url="amqp://guest@h//")
    assert celery_config(amqp)["broker_url"] == "amqp://guest@h//"


def test_short_visibility_timeout_shortens_the_restore_sweep() -> None:
    options = celery_config(settings(redis_url="redis://h/0", visibility_timeout=6))[
        "broker_transport_options"
    ]
    assert options["visibility_timeout"] == 6
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 6


def test_embedded_redis_is_the_default_and_uses_a_unix_socket() -> None:
    conf = celery_config(settings())
    assert conf["broker_url"].startswith("meterd-redis+socket://")
    assert conf["broker_url"].endswith(".meterd/redis.sock")


def test_bad_settings_fail_loudly() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        settings(flush_interval=0)
    with pytest.raises(ValidationError):
        settings(redis_prefix="has space")


def test_beat_runs_the_lifecycle_job_on_its_queue() -> None:
    conf = celery_config(settings(redis_url="redis://h:6379/0", lifecycle_interval=30))
    entry = conf["beat_schedule"]["meterd.lifecycle.advance"]
    assert (entry["task"], entry["schedule"]) == ("meterd.lifecycle.advance", 30)
    assert conf["task_routes"]["meterd.lifecycle.*"] == {"queue": "meterd.lifecycle"}
