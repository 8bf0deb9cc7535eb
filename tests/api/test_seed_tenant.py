"""GET /api/web/v4/tenants/{tenantid}/entitlements/{type}: the tenant page, field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient

from meterd.domain import BillingType, ContractMode, FeatureType
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event
from meterd.timeutil import utcnow

from ..conftest import NOW
from ..helpers import grant
from .conftest import key_for

PATH = "/api/web/v4/tenants/tenant-7/entitlements/USERS"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)


def setup(rt: Runtime) -> None:
    for key, kind in (
        ("seats", FeatureType.USERS),
        ("sms_voice", FeatureType.CREDITS),
        ("id_proofing", FeatureType.TRANSACTIONS),
    ):
        rt.catalog.create_feature("acme", key, now=NOW, type=kind)
    grant(rt, "tenant-7", "50", feature="seats", starts_at=START, ends_at=END,
          contract_mode=ContractMode.TRIAL, contract_id="C-100")  # fmt: skip
    grant(rt, "tenant-7", "500", feature="sms_voice", starts_at=START, ends_at=END,
          renewal_quantity=Decimal(400), allotment=Decimal(100))  # fmt: skip
    grant(rt, "tenant-7", "200", feature="id_proofing", starts_at=START, ends_at=END)
    now = utcnow()
    rt.ingest.ingest(
        [event("tenant-7", "12", feature="seats", event_id="s", time=now),
         event("tenant-7", "7", feature="sms_voice", event_id="v", time=now),
         event("tenant-7", "50", feature="id_proofing", event_id="p", time=now)],
        now=now,
    )  # fmt: skip


def viewer(rt: Runtime) -> dict[str, str]:
    return key_for(rt, "acme", Permission.SPENTITLEMENTS_VIEW)


def test_the_users_entitlement_has_the_seed_shape(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    body = client.get(PATH, headers=viewer(runtime)).json()
    assert {
        k: body[k] for k in body if k not in ("id", "entitlementId", "smsVoice", "idProofing")
    } == {
        "customerId": "tenant-7",
        "contractNumber": "C-100",
        "type": "USERS",
        "status": "ACTIVE",
        "contractMode": "TRIAL",
        "usersBillingType": "PRE_PAID",
        "startDate": "2026-01-01T00:00:00Z",
        "endDate": "2027-01-01T00:00:00Z",
        "quantity": 50,
        "consumed": 12,
        "remaining": 38,
    }
    assert body["id"] == body["entitlementId"]
    assert body["smsVoice"] == {
        "startDate": "2026-01-01T00:00:00Z",
        "endDate": "2027-01-01T00:00:00Z",
        "quantity": 500,
        "consumed": 7,
        "allotment": 100,
        "renewalQuantity": 400,
    }
    assert body["idProofing"] == [
        {
            "billingType": "PRE_PAID",
            "startDate": "2026-01-01T00:00:00Z",
            "endDate": "2027-01-01T00:00:00Z",
            "quantity": 200,
            "consumed": 25,  # percent of the quantity, as the page says for PRE_PAID
        }
    ]


def test_transactions_type_has_no_remaining(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    body = client.get(PATH.replace("USERS", "TRANSACTIONS"), headers=viewer(runtime)).json()
    assert body["type"] == "TRANSACTIONS" and "remaining" not in body


def test_an_unknown_type_is_400(client: TestClient, runtime: Runtime) -> None:
    response = client.get(PATH.replace("USERS", "SEATS"), headers=viewer(runtime))
    assert response.status_code == 400


def test_a_tenant_without_such_an_entitlement_is_404(client: TestClient, runtime: Runtime) -> None:
    assert client.get(PATH, headers=viewer(runtime)).status_code == 404


def test_the_spentitlements_view_permission_is_required(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    other = key_for(runtime, "acme", Permission.ENTITLEMENTS_VIEW)
    assert client.get(PATH, headers=other).status_code == 403


def test_another_orgs_key_finds_nothing(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    other = key_for(runtime, "globex", Permission.SPENTITLEMENTS_VIEW)
    assert client.get(PATH, headers=other).status_code == 404


def test_an_expired_entitlement_shows_inactive(client: TestClient, runtime: Runtime) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", "5", feature="seats", starts_at=START,
          ends_at=utcnow() - timedelta(days=1), billing_type=BillingType.PRE_PAID)  # fmt: skip
    runtime.lifecycle.advance(utcnow())
    assert client.get(PATH, headers=viewer(runtime)).json()["status"] == "INACTIVE"
