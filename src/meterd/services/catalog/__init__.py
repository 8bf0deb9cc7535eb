"""The catalog: organisations, features and their meters, entitlements, and plans,
one module per aggregate (``organisations``, ``features``, ``entitlements`` with
its pure ``rules``, ``plans``).

``Catalog`` is the one object the composition root builds and the edges call
(``runtime.catalog``, some 150 call sites in the API, CLI, demo, tests and bench):
it only wires the four aggregates to their stores and hands out their methods, so
a new operation is a method of its aggregate, not of this class.
"""

from __future__ import annotations

from meterd.services.catalog.base import UNSET, CatalogError, check_grant
from meterd.services.catalog.entitlements import Entitlements
from meterd.services.catalog.features import METER_FIELDS, Features
from meterd.services.catalog.organisations import Organisations, OrgInfo
from meterd.services.catalog.plans import NewPlan, Plans
from meterd.services.catalog.rules import EntitlementChange, NewEntitlement, term_columns
from meterd.services.resolution import ResolutionCache
from meterd.storage.entitlements import EntitlementStore
from meterd.storage.features import FeatureStore
from meterd.storage.meter_versions import MeterVersions
from meterd.storage.organisations import OrganisationStore
from meterd.storage.plans import PlanStore
from meterd.storage.transitions import TransitionStore

__all__ = [
    "METER_FIELDS",
    "UNSET",
    "Catalog",
    "CatalogError",
    "EntitlementChange",
    "Entitlements",
    "Features",
    "NewEntitlement",
    "NewPlan",
    "OrgInfo",
    "Organisations",
    "Plans",
    "check_grant",
    "term_columns",
]


class Catalog:
    """The four aggregates behind one name: each method is its aggregate's."""

    def __init__(
        self,
        organisations: OrganisationStore,
        features: FeatureStore,
        entitlements: EntitlementStore,
        plans: PlanStore,
        transitions: TransitionStore,
        resolution: ResolutionCache,
        meter_versions: MeterVersions,
    ) -> None:
        orgs = Organisations(organisations)
        self.features = Features(features, meter_versions)
        self.entitlements = Entitlements(features, entitlements, transitions, resolution)
        self.plans = Plans(plans, features, self.entitlements)
        self.create_org = orgs.create_org
        self.list_organisations = orgs.list_organisations
        self.feature = self.features.feature
        self.features_of = self.features.features_of
        self.create_feature = self.features.create_feature
        self.change_feature = self.features.change_feature
        self.create_entitlement = self.entitlements.create_entitlement
        self.update_entitlement = self.entitlements.update_entitlement
        self.change_status = self.entitlements.change_status
        self.void_entitlement = self.entitlements.void
        self.reset_entitlement = self.entitlements.reset
        self.open_period = self.entitlements.open_period
        self.plan = self.plans.plan
        self.plans_of = self.plans.plans_of
        self.create_plan = self.plans.create_plan
        self.change_plan = self.plans.change_plan
        self.entitlement_from_plan = self.plans.entitlement_from_plan
        self.check_grant = check_grant
