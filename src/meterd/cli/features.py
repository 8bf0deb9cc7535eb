"""``meterd feature``: create, list, show and change the features of an org."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from meterd.cli import context
from meterd.cli.output import JsonFlag, Org, dimensions, echo_json, iso, say, table
from meterd.core.domain import Aggregation, FeatureType

if TYPE_CHECKING:
    from meterd.services.values import Feature

app = typer.Typer(help="Features.", no_args_is_help=True)

_MeterFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--meter-filter",
        help="count only raw events whose data has this value: key=value (repeatable)",
    ),
]


def feature_row(feature: Feature) -> dict[str, Any]:
    """A feature as the API's FeatureOut has it."""
    return {
        "id": str(feature.id),
        "key": feature.key,
        "name": feature.name,
        "description": feature.description,
        "type": feature.type,
        "units": feature.units,
        "product_id": None if feature.product_id is None else str(feature.product_id),
        "is_active": feature.is_active,
        "created_at": iso(feature.created_at),
        "scale": feature.scale,
        "aggregation": feature.aggregation,
        "event_type": feature.event_type,
        "value_property": feature.value_property,
        "meter_filters": feature.meter_filters or None,
    }


@app.command("create")
def feature_create(
    org: Org,
    key: str,
    name: str | None = None,
    units: str = "",
    type: FeatureType = FeatureType.FEATURE,
    scale: Annotated[
        int, typer.Option(help="fractional digits counted, 0-6; fixed at creation")
    ] = 6,
    aggregation: Annotated[
        str,
        typer.Option(help=f"one of {', '.join(a.value for a in Aggregation)}; fixed at creation"),
    ] = Aggregation.SUM.value,
    event_type: Annotated[
        str | None,
        typer.Option(help="the CloudEvents type of raw events metered (default: meterd.usage)"),
    ] = None,
    value_property: Annotated[
        str | None,
        typer.Option(help="the data property holding the value, e.g. usage.input_tokens"),
    ] = None,
    meter_filter: _MeterFilter = None,
) -> None:
    """Create a feature; how it is metered (scale, aggregation, event type, value
    property, meter filters) is fixed at creation."""
    from meterd.core.timeutil import utcnow

    feature = context.get_runtime().catalog.create_feature(
        org,
        key,
        now=utcnow(),
        name=name,
        units=units,
        type=type,
        scale=scale,
        aggregation=aggregation,
        event_type=event_type,
        value_property=value_property,
        meter_filters=dimensions(meter_filter, "--meter-filter"),
    )
    say(f"feature {feature.key} ({feature.id}) created")


@app.command("list")
def feature_list(org: Org, as_json: JsonFlag = False) -> None:
    """The org's features (retired ones too)."""
    rows = [feature_row(f) for f in context.get_runtime().catalog.features_of(org)]
    if as_json:
        echo_json(rows)
        return
    columns = ("key", "id", "name", "units", "scale", "aggregation", "is_active")
    table(f"features of {org}", columns, ([r[c] for c in columns] for r in rows))


@app.command("show")
def feature_show(org: Org, key: str, as_json: JsonFlag = False) -> None:
    """One feature in full (JSON, as the API shows it; ``--json`` changes nothing)."""
    echo_json(feature_row(context.get_runtime().catalog.feature(org, key)))


@app.command("update")
def feature_update(
    org: Org,
    key: str,
    name: str | None = None,
    description: str | None = None,
    units: str | None = None,
    active: Annotated[
        bool | None, typer.Option("--active/--retired", help="retire (or revive) the feature")
    ] = None,
) -> None:
    """Rename, describe or retire a feature; how it is metered is fixed at creation."""
    given = {"name": name, "description": description, "units": units, "is_active": active}
    values = {k: v for k, v in given.items() if v is not None}
    feature = context.get_runtime().catalog.change_feature(org, key, values)
    say(f"feature {feature.key} ({feature.id}) updated")
