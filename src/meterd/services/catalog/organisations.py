"""Organisations: the tenants everything else belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meterd.core.domain import ORG_ID_PATTERN
from meterd.services.catalog.base import CatalogError
from meterd.storage.organisations import OrganisationStore


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: str
    name: str
    created_at: datetime


class Organisations:
    def __init__(self, organisations: OrganisationStore) -> None:
        self.organisations = organisations

    def create_org(self, org_id: str, name: str | None, now: datetime) -> None:
        """Create ``org_id`` if it does not exist yet (an existing one is kept)."""
        if not ORG_ID_PATTERN.match(org_id):
            raise CatalogError("org id must be 1-64 characters of A-Z a-z 0-9 _ . -")
        self.organisations.ensure(org_id, name or org_id, now)

    def list_organisations(self) -> list[OrgInfo]:
        """Every organisation, by id."""
        return [OrgInfo(o.id, o.name, o.created_at) for o in self.organisations.all()]
