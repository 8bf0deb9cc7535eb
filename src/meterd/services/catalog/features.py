"""Features and their meters: how usage of each is counted, fixed at creation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meterd.core.domain import FEATURE_KEY_PATTERN, Aggregation, FeatureType
from meterd.core.errors import InvalidError
from meterd.core.meters import check_dimensions, check_meter, parse_path, path_text
from meterd.services import values
from meterd.services.catalog.base import CatalogError
from meterd.storage.features import FeatureStore
from meterd.storage.meter_versions import MeterVersions
from meterd.storage.models import Feature

#: How a feature is metered: fixed at creation (its counters' units and meaning
#: depend on them).
METER_FIELDS = ("scale", "aggregation", "event_type", "value_property", "meter_filters")


class Features:
    def __init__(self, features: FeatureStore, meter_versions: MeterVersions) -> None:
        self.features = features
        self.meter_versions = meter_versions

    def feature(self, org: str, key: str) -> values.Feature:
        return values.Feature.from_row(self.features.by_key(org, key))

    def features_of(self, org: str) -> list[values.Feature]:
        return [values.Feature.from_row(row) for row in self.features.all_of(org)]

    def change_feature(self, org: str, key: str, changes: dict[str, Any]) -> values.Feature:
        """Rename, describe, or retire (``is_active``) a feature. How it is metered
        (``METER_FIELDS``) is fixed: given, each must be what is stored (a change is
        refused; a value equal to the stored one changes nothing)."""
        if not changes:
            raise CatalogError("nothing to change")
        changes = dict(changes)
        metered = {name: changes.pop(name) for name in METER_FIELDS if name in changes}
        if metered:
            _refuse_meter_change(self.features.by_key(org, key), metered)
            if not changes:
                return self.feature(org, key)
        return values.Feature.from_row(self.features.update(org, key, changes))

    def create_feature(
        self,
        org: str,
        key: str,
        *,
        now: datetime,
        name: str | None = None,
        type: FeatureType = FeatureType.FEATURE,
        units: str = "",
        description: str = "",
        product_id: uuid.UUID | None = None,
        scale: int = 6,
        aggregation: Aggregation | str = Aggregation.SUM,
        event_type: str | None = None,
        value_property: str | None = None,
        meter_filters: Mapping[str, Any] | None = None,
    ) -> values.Feature:
        """A feature, metered as ``meterd.core.meters.check_meter`` allows (a definition
        that cannot be counted is refused with the reason)."""
        if not FEATURE_KEY_PATTERN.match(key):
            raise CatalogError("feature key must be 1-64 characters of A-Z a-z 0-9 _ . -")
        meter = check_meter(
            feature=key,
            aggregation=str(aggregation),
            scale=scale,
            event_type=event_type,
            value_property=value_property,
            filters=meter_filters,
        )
        feature = self.features.add(
            Feature(
                org_id=org,
                key=key,
                name=name or key,
                description=description,
                type=type.value,
                units=units,
                product_id=product_id,
                is_active=True,
                created_at=now,
                scale=meter.scale,
                aggregation=meter.aggregation.value,
                event_type=meter.event_type,
                value_property=path_text(meter.value_property) if meter.value_property else None,
                meter_filters=dict(meter.filters) if meter.filters else None,
            )
        )
        # After the commit, so a worker that reads the new version finds the meter.
        # If Redis cannot be reached the error goes to the caller (as for the
        # resolution refresh after a grant) and the feature stands: workers find
        # its meter at once for events naming it, and otherwise within the 10 s
        # their kept list lasts.
        self.meter_versions.bump(org)
        return values.Feature.from_row(feature)


def _refuse_meter_change(feature: Feature, given: dict[str, Any]) -> None:
    changed = [
        name
        for name, value in given.items()
        if _meter_value(name, value) != _meter_value(name, getattr(feature, name))
    ]
    if changed:
        raise CatalogError(
            f"{', '.join(changed)} of feature {feature.key!r} cannot change: how a"
            " feature is metered is fixed at creation (its counters depend on it);"
            " create a new feature to change how it is metered"
        )


_INVALID = object()


def _meter_value(name: str, value: Any) -> Any:
    """A meter field's value in its stored form, to compare (``_INVALID`` if it is
    not one: never equal to a stored value)."""
    if value is None:
        return None
    try:
        if name == "value_property":
            return path_text(parse_path(value, name))
        if name == "meter_filters":
            checked = check_dimensions(value, name)
            return json.dumps(checked, sort_keys=True) if checked else None
    except InvalidError:
        return _INVALID
    if name == "scale":
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    return str(value)
