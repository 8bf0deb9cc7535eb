"""Upkeep of the event log: partitions created ahead, and what is past the retention
dropped (``meterd.lifecycle.event_log_maintain``, hourly from beat).

The task is a shell over ``EventLogMaintenance.maintain``; the retention is the
runtime's setting (``METERD_EVENT_RETENTION``), fixed when the service is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from meterd.storage.event_log import EventLog


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    #: Partitions created ahead.
    created: int
    #: Partitions dropped (PostgreSQL) or rows deleted (SQLite) past the retention.
    dropped: int


class EventLogMaintenance:
    def __init__(self, log: EventLog, *, retention: timedelta) -> None:
        self.log = log
        self.retention = retention

    def maintain(self, now: datetime) -> MaintenanceReport:
        """Create the partitions ahead of ``now``; drop what is older than the retention."""
        created, dropped = self.log.maintain(now, retention=self.retention)
        return MaintenanceReport(created, dropped)
