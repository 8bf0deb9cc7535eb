"""GET /api/web/v4/tenants/{tenantid}/entitlements/{type}: the tenant page, field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient

from meterd.domain import BillingType, ContractMode, FeatureType, Outcome
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event
from meterd.timeutil import isoformat_seconds, utcnow

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
        ("verifications", FeatureType.TRANSACTIONS),
    ):
        rt.catalog.create_feature("acme", key, now=NOW, type=kind)
    grant(rt, "tenant-7", "50", feature="seats", starts_at=START, ends_at=END,
          contract_mode=ContractMode.TRIAL, contract_id="C-100")  # fmt: skip
    grant(rt, "tenant-7", "500", feature="sms_voice", starts_at=START, ends_at=END,
          renewal_quantity=Decimal(400), allotment=Decimal(100))  # fmt: skip
    grant(rt, "tenant-7", "200", feature="id_proofing", starts_at=START, ends_at=END)
    grant(rt, "tenant-7", "900", feature="verifications", starts_at=START, ends_at=END)
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


# -- which grant is shown: the one usage would burn now (services.queries.choose_for_usage)


def use(rt: Runtime, feature: str, quantity: str, event_id: str) -> None:
    now = utcnow()
    report = rt.ingest.ingest(
        [event("tenant-7", quantity, feature=feature, event_id=event_id, time=now)], now=now
    )
    assert report.outcomes == [Outcome.ACCEPTED]


def two_users_grants(rt: Runtime) -> tuple[str, str]:
    """A: 5 at priority 0, used up; B: 100 at priority 1, 3 used (the issue's example)."""
    rt.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    now = utcnow()
    a = grant(rt, "tenant-7", "5", feature="seats", priority=0,
              starts_at=now - timedelta(days=30), ends_at=now + timedelta(days=30))  # fmt: skip
    use(rt, "seats", "5", "a-full")
    b = grant(rt, "tenant-7", "100", feature="seats", priority=1,
              starts_at=now - timedelta(days=30), ends_at=now + timedelta(days=60))  # fmt: skip
    use(rt, "seats", "3", "b-three")
    return str(a.id), str(b.id)


def test_users_shows_the_next_grant_once_the_first_in_burn_down_order_is_used_up(
    client: TestClient, runtime: Runtime
) -> None:
    _, b = two_users_grants(runtime)
    body = client.get(PATH, headers=viewer(runtime)).json()
    assert (body["id"], body["quantity"], body["consumed"], body["remaining"]) == (b, 100, 3, 97)


def test_the_grant_shown_is_the_one_the_next_usage_burns(
    client: TestClient, runtime: Runtime
) -> None:
    two_users_grants(runtime)
    before = client.get(PATH, headers=viewer(runtime)).json()
    use(runtime, "seats", "1", "next")
    after = client.get(PATH, headers=viewer(runtime)).json()
    assert after["id"] == before["id"] and after["consumed"] == before["consumed"] + 1


def test_when_every_grant_is_used_up_the_one_taking_the_overage_is_shown(
    client: TestClient, runtime: Runtime
) -> None:
    _, b = two_users_grants(runtime)
    use(runtime, "seats", "200", "over")
    body = client.get(PATH, headers=viewer(runtime)).json()
    assert (body["id"], body["consumed"], body["remaining"]) == (b, 203, 0)


def test_transactions_comes_from_a_transactions_feature_never_from_a_sub_block_feature(
    client: TestClient, runtime: Runtime
) -> None:
    for key in ("id_proofing", "verifications"):
        runtime.catalog.create_feature("acme", key, now=NOW, type=FeatureType.TRANSACTIONS)
    now = utcnow()
    grant(runtime, "tenant-7", "10", feature="id_proofing", starts_at=now - timedelta(days=1),
          ends_at=now + timedelta(days=30))  # fmt: skip
    use(runtime, "id_proofing", "10", "proofing-full")
    wanted = grant(runtime, "tenant-7", "1000", feature="verifications",
                   starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30))  # fmt: skip
    body = client.get(PATH.replace("USERS", "TRANSACTIONS"), headers=viewer(runtime)).json()
    assert (body["id"], body["quantity"]) == (str(wanted.id), 1000)


def test_a_type_held_only_by_sub_block_features_is_404(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.catalog.create_feature("acme", "id_proofing", now=NOW, type=FeatureType.TRANSACTIONS)
    grant(runtime, "tenant-7", "10", feature="id_proofing", starts_at=START, ends_at=None)
    response = client.get(PATH.replace("USERS", "TRANSACTIONS"), headers=viewer(runtime))
    assert response.status_code == 404


def expired_and_active(rt: Runtime, feature: str) -> str:
    """An expired 2025 grant (the lower number) and an active one; the active one's id."""
    rt.catalog.create_feature("acme", feature, now=NOW, type=FeatureType.CREDITS)
    grant(rt, "tenant-7", "10", feature=feature, starts_at=datetime(2025, 1, 1, tzinfo=UTC),
          ends_at=datetime(2025, 12, 31, tzinfo=UTC))  # fmt: skip
    now = utcnow()
    active = grant(rt, "tenant-7", "700", feature=feature, starts_at=now - timedelta(days=1),
                   ends_at=now + timedelta(days=30))  # fmt: skip
    return isoformat_seconds(active.starts_at) or ""


def test_a_sub_block_shows_the_active_grant_over_an_older_expired_one(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    started = expired_and_active(runtime, "flash_pass")
    block = client.get(PATH, headers=viewer(runtime)).json()["flashPass"]
    assert (block["startDate"], block["quantity"]) == (started, 700)


def test_id_proofing_shows_the_active_grant_over_an_older_expired_one(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", "50", feature="seats", starts_at=START, ends_at=None)
    started = expired_and_active(runtime, "id_proofing")
    (item,) = client.get(PATH, headers=viewer(runtime)).json()["idProofing"]
    assert (item["startDate"], item["quantity"]) == (started, 700)


def test_every_sub_block_is_chosen_by_the_same_rule_as_the_main_entitlement(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    now = utcnow()
    for key in ("flash_pass", "fleet_management", "pay_to_print", "printer", "issuance"):
        runtime.catalog.create_feature("acme", key, now=NOW, type=FeatureType.CREDITS)
        grant(runtime, "tenant-7", "1", feature=key, priority=0, starts_at=now - timedelta(days=1),
              ends_at=now + timedelta(days=30))  # fmt: skip
        use(runtime, key, "1", f"{key}-full")
        grant(runtime, "tenant-7", "9", feature=key, priority=1, starts_at=now - timedelta(days=1),
              ends_at=now + timedelta(days=30))  # fmt: skip
    body = client.get(PATH, headers=viewer(runtime)).json()
    shown = {name: body[name]["quantity"] for name in
             ("flashPass", "fleetManagement", "payToPrint", "printer", "issuance")}  # fmt: skip
    assert shown == dict.fromkeys(shown, 9)
