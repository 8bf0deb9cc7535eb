"""The edges see values, not rows: what the catalog and the read side hand out is a
frozen value of ``meterd.services.values`` (every field the edges read loaded), and
no module of ``api/`` holds a mapped class, by whatever import path it came."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from datetime import timedelta
from decimal import Decimal

import pytest

import meterd.api
from meterd.runtime import Runtime
from meterd.services import values
from meterd.services.catalog import NewPlan
from meterd.storage.models import Base

from .conftest import NOW
from .helpers import grant


def _api_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(meterd.api.__path__, prefix="meterd.api.")]


@pytest.mark.parametrize("name", _api_modules())
def test_no_api_module_holds_a_mapped_class(name: str) -> None:
    module = importlib.import_module(name)
    mapped = [
        attr
        for attr, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Base)
    ]
    assert mapped == [], f"{name} holds mapped classes {mapped}: import services.values instead"


def test_catalog_answers_are_frozen_values(runtime: Runtime) -> None:
    feature = runtime.catalog.feature("acme", "api_calls")
    ent = grant(runtime, quantity="10")
    assert isinstance(feature, values.Feature)
    assert isinstance(ent, values.Entitlement)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ent.quantity = Decimal(20)  # type: ignore[misc]


def test_a_plan_carries_its_families_in_order(runtime: Runtime) -> None:
    runtime.catalog.create_plan(
        NewPlan(org="acme", key="gold", feature="api_calls", quantity=None, families=("b", "a")),
        NOW,
    )
    (plan,) = runtime.catalog.plans_of("acme")
    assert isinstance(plan, values.Plan)
    assert all(isinstance(f, values.PlanFamily) for f in plan.families)
    assert [f.key for f in plan.families] == ["b", "a"]


def test_the_read_side_answers_values(runtime: Runtime) -> None:
    ent = grant(runtime, quantity="10")
    listed, feature_key, _ = runtime.queries.get("acme", ent.id, NOW + timedelta(minutes=1))
    assert listed == ent
    assert feature_key == "api_calls"
    assert all(isinstance(t, values.Transition) for t in runtime.queries.history("acme", ent.id))
