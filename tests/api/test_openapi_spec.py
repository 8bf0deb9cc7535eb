"""Issue 11: ``/openapi.json`` lists every query parameter the routes read from the raw
query string (the Zenskar-style filters, the workspace page's case-insensitive
names), and declares the 400 the API answers instead of FastAPI's 422."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterd.core.filters import ORDERED, Kind

from ..helpers import grant

ZENSKAR = "/entitlements/customer/unique/{customer_id}"
NATIVE = "/v1/entitlements"
WORKSPACE = "/api/workspace/entitlement-operations/entitlements"
TENANT = "/api/web/v4/tenants/{tenantid}/entitlements/{type}"
AUTH_SCHEMES = [{"ApiKey": []}, {"Bearer": []}]
SUFFIXES = ("__neq", "__gt", "__gte", "__lt", "__lte", "__in", "__isnull")
ORDERING = ("__gt", "__gte", "__lt", "__lte")

ZENSKAR_FIELDS = {
    "id": Kind.UUID,
    "entitlement": Kind.UUID,
    "customer": Kind.STRING,
    "contract_id": Kind.STRING,
    "created_at": Kind.DATETIME,
    "active_from": Kind.DATETIME,
    "quantity": Kind.DECIMAL,
    "quantity_used": Kind.DECIMAL,
}
_NATIVE_STRINGS = (
    "customer", "customer_id", "feature", "contract_id", "status", "billing_type", "contract_mode",
)  # fmt: skip
NATIVE_FIELDS = {
    **{f: Kind.UUID for f in ("id", "entitlement", "feature_id", "plan_id", "parent_id")},
    **{f: Kind.STRING for f in _NATIVE_STRINGS},
    **{f: Kind.DATETIME for f in ("created_at", "starts_at", "active_from", "ends_at")},
    "grace_until": Kind.DATETIME,
    "number": Kind.INTEGER,
    "quantity": Kind.DECIMAL,
    "quantity_used": Kind.DECIMAL,
}
WORKSPACE_NAMES = [
    "ModelId", "PlanId", "PlanFamilyIds", "ConditionFamily", "TermKind", "TermValue",
    "TermUnit", "RenewalPolicyId", "OwnerPartyRoleId", "OwnerEntityInstanceId", "Status",
    "StartsFromUtc", "StartsToUtc", "EndsFromUtc", "EndsToUtc", "Search", "Page", "PageSize",
    "access_token",
]  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    from meterd.api.app import create_app

    app = create_app(lambda: None, check_redis=False)  # type: ignore[arg-type, return-value]
    with TestClient(app) as client:
        document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def parameters(spec: dict[str, Any], path: str, where: str = "query") -> dict[str, Any]:
    declared = spec["paths"][path]["get"]["parameters"]
    names = [p["name"] for p in declared]
    assert len(names) == len(set(names)), f"{path} declares a parameter twice"
    return {p["name"]: p for p in declared if p["in"] == where}


def filter_names(fields: dict[str, Kind]) -> set[str]:
    """Each field bare and with each suffix its kind takes (ordering: ordered kinds only)."""
    return {
        field + suffix
        for field, kind in fields.items()
        for suffix in ("", *SUFFIXES)
        if kind in ORDERED or suffix not in ORDERING
    }


PAGING = {"sort_key", "sort_type", "search", "cursor", "limit"}


def test_the_zenskar_route_declares_every_filter_with_each_operator_and_the_paging(
    spec: dict[str, Any],
) -> None:
    assert set(parameters(spec, ZENSKAR)) == filter_names(ZENSKAR_FIELDS) | PAGING
    for field in ("created_at", "active_from", "quantity", "quantity_used"):
        assert {field + suffix for suffix in SUFFIXES} <= set(parameters(spec, ZENSKAR))


def test_the_native_list_declares_every_filter_with_each_operator_and_the_paging(
    spec: dict[str, Any],
) -> None:
    assert set(parameters(spec, NATIVE)) == filter_names(NATIVE_FIELDS) | PAGING


def test_filter_parameters_carry_their_types_and_bounds(spec: dict[str, Any]) -> None:
    native = parameters(spec, NATIVE)
    assert native["number__gt"]["schema"] == {
        "type": "integer",
        "format": "int64",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }
    assert native["created_at__lte"]["schema"]["format"] == "date-time"
    assert native["id"]["schema"] == {"type": "string", "format": "uuid"}
    assert native["ends_at__isnull"]["schema"] == {"type": "boolean"}
    assert native["status__in"]["schema"]["type"] == "string"
    assert native["customer"]["schema"]["maxLength"] == 200
    quantity = parameters(spec, ZENSKAR)["quantity__gte"]["schema"]
    assert (quantity["type"], quantity["maximum"]) == ("number", 9007199254740991)
    assert parameters(spec, ZENSKAR)["sort_key"]["schema"]["enum"] == [
        "id", "name", "created_at", "total_quantity", "total_quantity_used",
        "total_expired_entitlements",
    ]  # fmt: skip


def test_the_workspace_route_declares_each_parameter_once_by_its_canonical_name(
    spec: dict[str, Any],
) -> None:
    assert sorted(parameters(spec, WORKSPACE)) == sorted(WORKSPACE_NAMES)
    declared = parameters(spec, WORKSPACE)
    assert declared["Page"]["schema"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }
    assert declared["Status"]["schema"]["enum"] == [0, 1, 2, 3, 4, 5, 6]
    assert declared["EndsToUtc"]["schema"]["format"] == "date-time"
    assert declared["PlanFamilyIds"]["schema"]["type"] == "array"


def test_the_tenant_route_declares_only_its_path_parameters(spec: dict[str, Any]) -> None:
    assert parameters(spec, TENANT) == {}
    assert set(parameters(spec, TENANT, "path")) == {"tenantid", "type"}
    assert parameters(spec, TENANT, "header") == {}  # the key is a security scheme
    assert spec["paths"][TENANT]["get"]["security"] == AUTH_SCHEMES


def test_no_operation_declares_422(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_operation_taking_input_declares_400_problem_details(spec: dict[str, Any]) -> None:
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            takes_input = "requestBody" in operation or any(
                p["in"] != "header" for p in operation.get("parameters", [])
            )
            if not takes_input or path == WORKSPACE:
                continue
            content = operation["responses"]["400"]["content"]
            assert content == {"application/problem+json": {"schema": problem}}, (method, path)
    assert spec["components"]["schemas"]["Problem"]["required"] == [
        "type", "title", "status", "detail",
    ]  # fmt: skip


def test_the_workspace_route_declares_its_400_as_the_envelope(spec: dict[str, Any]) -> None:
    answer = spec["paths"][WORKSPACE]["get"]["responses"]["400"]
    schema = answer["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RuntimeEntitlementList"}


def example(schema: dict[str, Any]) -> str:
    """A valid value for a declared query parameter."""
    if "enum" in schema:
        return str(schema["enum"][0])
    if "anyOf" in schema:  # an optional parameter: X or null
        schema = schema["anyOf"][0]
    if schema.get("pattern") == "^(asc|desc)$":
        return "desc"
    kind = schema.get("format") or schema.get("type")
    return {
        "uuid": "00000000-0000-0000-0000-000000000000",
        "date-time": "2026-01-01T00:00:00Z",
        "boolean": "true",
        "array": "00000000-0000-0000-0000-000000000000",
        "number": "1",
        "int64": "1",
        "int32": "1",
        "integer": "1",
    }.get(kind, "a")


@pytest.mark.parametrize("path", [ZENSKAR, NATIVE, WORKSPACE])
def test_every_declared_query_parameter_is_one_the_route_reads(
    client: TestClient, runtime: Any, acme: dict[str, str], spec: dict[str, Any], path: str
) -> None:
    grant(runtime)
    url = path.replace("{customer_id}", "cust-1")
    headers = {**acme, "organisation": "acme"}
    declared = parameters(spec, path)
    for name, parameter in declared.items():
        schema = parameter["schema"]
        if name.endswith("__in"):  # comma-separated values of the field's own type
            schema = declared[name.removesuffix("__in")]["schema"]
        value = acme["x-api-key"] if name == "access_token" else example(schema)
        if name == "cursor":
            continue  # only the route's own next/previous values are cursors
        response = client.get(url, params={name: value}, headers=headers)
        assert response.status_code == 200, (name, value, response.text)
