"""The meters of an org, read from its features (``meterd.core.meters.Meter``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from meterd.core.domain import Aggregation
from meterd.core.errors import UnavailableError
from meterd.core.meters import Meter, check_dimensions, parse_path
from meterd.storage.models import Feature


class MeterStoreUnavailable(UnavailableError):
    """The database did not answer while the meters were read. Callers that keep a
    list read before (``services.meters.MeterCatalog``) may go on with it."""


class MeterStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def meters_of(self, org_id: str) -> list[Meter]:
        """Every feature of the org as a ``Meter`` (retired ones too: usage timed
        while they were active may still arrive), with its creation time."""
        stmt = select(
            Feature.key,
            Feature.aggregation,
            Feature.scale,
            Feature.event_type,
            Feature.value_property,
            Feature.meter_filters,
            Feature.created_at,
        ).where(Feature.org_id == org_id)
        try:
            with self.sessions() as s:
                rows = s.execute(stmt).all()
        except (DBAPIError, PoolTimeoutError) as exc:  # a hung database: the pool times out
            raise MeterStoreUnavailable(
                f"the meters of org {org_id!r} could not be read: the database did not"
                f" answer ({type(exc).__name__}); try again"
            ) from exc
        return [
            Meter(
                feature=key,
                aggregation=Aggregation(aggregation),
                scale=scale,
                event_type=event_type,
                value_property=parse_path(path) if path else None,
                filters=check_dimensions(filters) if filters else None,
                created_at=created_at,
            )
            for key, aggregation, scale, event_type, path, filters, created_at in rows
        ]
