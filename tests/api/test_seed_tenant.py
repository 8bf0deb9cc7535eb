"""GET /api/web/v4/tenants/{tenantid}/entitlements/{type}: the tenant page, field by field
against the seed page (/work/shared/seeds/tenant-entitlement-by-type.txt)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from meterd.core.domain import BillingType, ContractMode, FeatureType, Outcome
from meterd.core.lifecycle import OperatorAction
from meterd.core.timeutil import isoformat_seconds, utcnow
from meterd.runtime import Runtime
from meterd.services.api_keys import Permission
from meterd.testing import event

from ..conftest import NOW
from ..helpers import grant
from .conftest import key_for

PATH = "/api/web/v4/tenants/tenant-7/entitlements/USERS"
#: A ten-year contract that began about eleven months ago, relative to today: with
#: fixed dates (2026-01-01 to 2036-01-01) every grant had ended from 2036 on.
START = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=330)
END = START + timedelta(days=3652)
DATES = {"startDate": f"{START:%Y-%m-%d}T00:00:00Z", "endDate": f"{END:%Y-%m-%d}T00:00:00Z"}
OPEN_ENDED = "9999-12-31T23:59:59Z"

#: Every field of the seed page's response schema, and of each of its objects.
SEED_FIELDS = {
    "additionalFeatures", "contractMode", "contractNumber", "customerId", "endDate",
    "entitlementId", "flashPass", "fleetManagement", "id", "idProofing", "issuance",
    "payToPrint", "printer", "quantity", "remaining", "smartLoginEnabled", "smsVoice",
    "startDate", "status", "type", "userBundles", "usersBillingType",
}  # fmt: skip
SEED_BLOCK_FIELDS = {
    "flashPass": {"consumed", "endDate", "quantity", "startDate"},
    "fleetManagement": {"addOn", "consumed", "endDate", "quantity", "startDate"},
    "issuance": {"addOn", "consumed", "endDate", "quantity", "serviceBundles", "startDate"},
    "payToPrint": {"addOn", "consumed", "endDate", "quantity", "startDate"},
    "printer": {"consumed", "endDate", "quantity", "startDate"},
    "smsVoice": {"allotment", "consumed", "endDate", "quantity", "renewalQuantity", "startDate"},
    "additionalFeatures": {"enhancedGeoLocation"},
}
SEED_ID_PROOFING_FIELDS = {
    "billingType", "consumed", "endDate", "faceRecognitionType", "quantity", "startDate",
}  # fmt: skip
SEED_BUNDLE_FIELDS = {"bundleType", "rank", "usageReportId"}
#: Not on the page, but in the contract (CONTRACT.md, section 6): the main consumption.
ADDED_FIELDS = {"consumed"}

USER_BUNDLES = [{"bundleType": "PROFESSIONAL", "rank": 1, "usageReportId": "u-1"}]
SERVICE_BUNDLES = [
    {"bundleType": "ESSENTIALS", "rank": 2, "usageReportId": "s-2"},
    {"bundleType": "API"},
]


def setup(rt: Runtime) -> None:
    """tenant-7 with a grant for the main entitlement of each type and for every block,
    every attribute of the page set, and some usage on each."""
    for key, kind in (
        ("seats", FeatureType.USERS),
        ("verifications", FeatureType.TRANSACTIONS),
        ("id_proofing", FeatureType.TRANSACTIONS),
        ("sms_voice", FeatureType.CREDITS),
        ("flash_pass", FeatureType.CREDITS),
        ("fleet_management", FeatureType.CREDITS),
        ("pay_to_print", FeatureType.CREDITS),
        ("printer", FeatureType.CREDITS),
        ("issuance", FeatureType.CREDITS),
    ):
        rt.catalog.create_feature("acme", key, now=NOW, type=kind)
    dated = {"starts_at": START, "ends_at": END}
    grant(rt, "tenant-7", "50", feature="seats", contract_mode=ContractMode.TRIAL,
          contract_id="C-100", attributes={
              "smartLoginEnabled": True, "additionalFeatures": {"enhancedGeoLocation": True},
              "userBundles": USER_BUNDLES}, **dated)  # fmt: skip
    grant(rt, "tenant-7", "900", feature="verifications", **dated)
    grant(rt, "tenant-7", "200", feature="id_proofing",
          attributes={"faceRecognitionType": "ENHANCED"}, **dated)  # fmt: skip
    grant(rt, "tenant-7", "500", feature="sms_voice", renewal_quantity=Decimal(400),
          allotment=Decimal(100), **dated)  # fmt: skip
    grant(rt, "tenant-7", "30", feature="flash_pass", **dated)
    grant(rt, "tenant-7", "40", feature="fleet_management",
          attributes={"addOn": "fleetManagementOptIn"}, **dated)  # fmt: skip
    grant(rt, "tenant-7", "60", feature="pay_to_print", attributes={"addOn": "payToPrintAddOn"},
          **dated)  # fmt: skip
    grant(rt, "tenant-7", "70", feature="printer", **dated)
    grant(rt, "tenant-7", "80", feature="issuance", contract_mode=ContractMode.TRIAL,
          attributes={"addOn": "printerCert", "serviceBundles": SERVICE_BUNDLES},
          **dated)  # fmt: skip
    now = utcnow()
    used = {"seats": "12", "id_proofing": "50", "sms_voice": "7", "flash_pass": "3",
            "fleet_management": "4", "pay_to_print": "5", "printer": "6",
            "issuance": "2"}  # fmt: skip
    report = rt.ingest.ingest(
        [event("tenant-7", q, feature=f, event_id=f, time=now) for f, q in used.items()],
        now=now,
    )
    assert set(report.outcomes) == {Outcome.ACCEPTED}


def viewer(rt: Runtime) -> dict[str, str]:
    return key_for(rt, "acme", Permission.SPENTITLEMENTS_VIEW)


def page(client: TestClient, rt: Runtime, path: str = PATH) -> dict[str, Any]:
    response = client.get(path, headers=viewer(rt))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- every field against the seed page


def test_the_response_has_every_field_of_the_seed_page_and_no_other(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    body = page(client, runtime)
    assert set(body) == SEED_FIELDS | ADDED_FIELDS
    assert {name: set(body[name]) for name in SEED_BLOCK_FIELDS} == SEED_BLOCK_FIELDS
    assert [set(item) for item in body["idProofing"]] == [SEED_ID_PROOFING_FIELDS]
    bundles = body["userBundles"] + body["issuance"]["serviceBundles"]
    assert all(set(bundle) <= SEED_BUNDLE_FIELDS for bundle in bundles)
    assert set(body["userBundles"][0]) == SEED_BUNDLE_FIELDS


def test_the_main_fields_are_the_main_grants(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    body = page(client, runtime)
    blocks = {*SEED_BLOCK_FIELDS, "idProofing"}
    assert {k: v for k, v in body.items() if k not in blocks} == {
        "id": body["entitlementId"],
        "entitlementId": body["entitlementId"],
        "customerId": "tenant-7",
        "contractNumber": "C-100",
        "type": "USERS",
        "status": "ACTIVE",
        "contractMode": "TRIAL",
        "usersBillingType": "PRE_PAID",
        **DATES,
        "quantity": 50,
        "consumed": 12,
        "remaining": 38,
        "smartLoginEnabled": True,
        "userBundles": USER_BUNDLES,
    }


def test_additional_features_are_the_main_grants(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    assert page(client, runtime)["additionalFeatures"] == {"enhancedGeoLocation": True}


def test_the_sms_voice_block_has_allotment_and_renewal_quantity(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    assert page(client, runtime)["smsVoice"] == {
        **DATES, "quantity": 500, "consumed": 7, "allotment": 100, "renewalQuantity": 400,
    }  # fmt: skip


def test_the_flash_pass_block(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    assert page(client, runtime)["flashPass"] == {**DATES, "quantity": 30, "consumed": 3}


def test_the_fleet_management_block_has_its_add_on(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    assert page(client, runtime)["fleetManagement"] == {
        **DATES, "quantity": 40, "consumed": 4, "addOn": "fleetManagementOptIn",
    }  # fmt: skip


def test_the_pay_to_print_block_has_its_add_on(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    assert page(client, runtime)["payToPrint"] == {
        **DATES, "quantity": 60, "consumed": 5, "addOn": "payToPrintAddOn",
    }  # fmt: skip


def test_the_printer_block(client: TestClient, runtime: Runtime) -> None:
    setup(runtime)
    assert page(client, runtime)["printer"] == {**DATES, "quantity": 70, "consumed": 6}


def test_a_trial_issuance_block_has_its_trial_fields_service_bundles_and_add_on(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    assert page(client, runtime)["issuance"] == {
        **DATES, "quantity": 80, "consumed": 2, "addOn": "printerCert",
        "serviceBundles": SERVICE_BUNDLES,
    }  # fmt: skip


def test_a_production_issuance_block_leaves_out_start_end_and_quantity(
    client: TestClient, runtime: Runtime
) -> None:
    for key, kind in (("seats", FeatureType.USERS), ("issuance", FeatureType.CREDITS)):
        runtime.catalog.create_feature("acme", key, now=NOW, type=kind)
    grant(runtime, "tenant-7", "1", feature="seats", starts_at=START, ends_at=END)
    grant(runtime, "tenant-7", "80", feature="issuance", starts_at=START, ends_at=END,
          contract_mode=ContractMode.PRODUCTION,
          attributes={"serviceBundles": [{"bundleType": "PLUS"}]})  # fmt: skip
    issuance = page(client, runtime)["issuance"]
    assert issuance == {"consumed": 0, "serviceBundles": [{"bundleType": "PLUS"}]}


def test_an_issuance_block_without_service_bundles_shows_an_empty_list(
    client: TestClient, runtime: Runtime
) -> None:
    for key, kind in (("seats", FeatureType.USERS), ("issuance", FeatureType.CREDITS)):
        runtime.catalog.create_feature("acme", key, now=NOW, type=kind)
    grant(runtime, "tenant-7", "1", feature="seats", starts_at=START, ends_at=END)
    grant(runtime, "tenant-7", "80", feature="issuance", starts_at=START, ends_at=END)
    assert page(client, runtime)["issuance"]["serviceBundles"] == []


def test_an_id_proofing_item_has_its_face_recognition_type_and_consumed_in_percent(
    client: TestClient, runtime: Runtime
) -> None:
    setup(runtime)
    assert page(client, runtime)["idProofing"] == [
        {
            "billingType": "PRE_PAID",
            **DATES,
            "quantity": 200,
            "consumed": 25,  # percent of the quantity, as the page says for PRE_PAID
            "faceRecognitionType": "ENHANCED",
        }
    ]


def test_unset_attributes_and_missing_blocks_are_left_out(
    client: TestClient, runtime: Runtime
) -> None:
    for key, kind in (
        ("seats", FeatureType.USERS),
        ("fleet_management", FeatureType.CREDITS),
        ("id_proofing", FeatureType.TRANSACTIONS),
    ):
        runtime.catalog.create_feature("acme", key, now=NOW, type=kind)
    for key in ("seats", "fleet_management", "id_proofing"):
        grant(runtime, "tenant-7", "10", feature=key, starts_at=START, ends_at=END)
    body = page(client, runtime)
    assert set(body) == (SEED_FIELDS | ADDED_FIELDS) - {
        "additionalFeatures", "smartLoginEnabled", "userBundles",
        "flashPass", "payToPrint", "printer", "issuance", "smsVoice",
    }  # fmt: skip
    assert "addOn" not in body["fleetManagement"]
    assert "faceRecognitionType" not in body["idProofing"][0]


def test_an_open_ended_grant_shows_the_open_ended_end_date(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", "10", feature="seats", starts_at=START, ends_at=None)
    assert page(client, runtime)["endDate"] == OPEN_ENDED


def test_open_ended_blocks_and_id_proofing_show_the_open_ended_end_date(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", "10", feature="seats", starts_at=START, ends_at=END)
    for key in ("printer", "id_proofing"):
        runtime.catalog.create_feature("acme", key, now=NOW, type=FeatureType.CREDITS)
        grant(runtime, "tenant-7", "10", feature=key, starts_at=START, ends_at=None)
    body = page(client, runtime)
    assert (body["printer"]["endDate"], body["idProofing"][0]["endDate"]) == (OPEN_ENDED,) * 2


def test_an_unlimited_grant_shows_quantity_and_remaining_null(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", None, feature="seats", starts_at=START, ends_at=END)
    body = page(client, runtime)
    assert (body["quantity"], body["consumed"], body["remaining"]) == (None, 0, None)


def test_a_terminated_entitlement_shows_terminated(client: TestClient, runtime: Runtime) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    ent = grant(runtime, "tenant-7", "5", feature="seats", starts_at=START, ends_at=END)
    runtime.catalog.change_status(ent.id, OperatorAction.TERMINATE, utcnow())
    assert page(client, runtime)["status"] == "TERMINATED"


def test_a_pay_per_use_grant_shows_its_billing_type(client: TestClient, runtime: Runtime) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(runtime, "tenant-7", "5", feature="seats", starts_at=START, ends_at=None,
          billing_type=BillingType.PAY_PER_USE)  # fmt: skip
    assert page(client, runtime)["usersBillingType"] == "PAY_PER_USE"


# -- set through /v1/entitlements, shown on the page


def test_sms_voice_allotment_set_through_the_api_is_shown(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    runtime.catalog.create_feature("acme", "sms_voice", now=NOW, type=FeatureType.CREDITS)
    grant(runtime, "tenant-7", "10", feature="seats", starts_at=START, ends_at=END)
    made = client.post("/v1/entitlements", headers=acme, json={
        "customer_id": "tenant-7", "feature": "sms_voice", "quantity": "500",
        "allotment": "100"}).json()  # fmt: skip
    assert page(client, runtime)["smsVoice"]["allotment"] == 100
    body = {"row_version": made["row_version"], "allotment": "250"}
    changed = client.patch(f"/v1/entitlements/{made['id']}", headers=acme, json=body)
    assert changed.status_code == 200, changed.text
    assert page(client, runtime)["smsVoice"]["allotment"] == 250


def test_attributes_set_through_the_api_are_shown(
    client: TestClient, runtime: Runtime, acme: dict[str, str]
) -> None:
    runtime.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    created = client.post("/v1/entitlements", headers=acme, json={
        "customer_id": "tenant-7", "feature": "seats", "quantity": "10",
        "attributes": {"smartLoginEnabled": True, "userBundles": [{"bundleType": "PLUS"}],
                       "additionalFeatures": {"enhancedGeoLocation": False}}})  # fmt: skip
    assert created.status_code == 201, created.text
    body = page(client, runtime)
    assert (body["smartLoginEnabled"], body["userBundles"], body["additionalFeatures"]) == (
        True,
        [{"bundleType": "PLUS"}],
        {"enhancedGeoLocation": False},
    )


# -- errors, permissions, status


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


# -- which grant is shown: the one usage would burn now (services.compat_queries.choose_for_usage)


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
    """A grant that expired the year before START (the lower number) and an active one;
    the active one's id."""
    rt.catalog.create_feature("acme", feature, now=NOW, type=FeatureType.CREDITS)
    grant(rt, "tenant-7", "10", feature=feature, starts_at=START - timedelta(days=365),
          ends_at=START - timedelta(days=1))  # fmt: skip
    now = utcnow()
    active = grant(rt, "tenant-7", "700", feature=feature, starts_at=now - timedelta(days=1),
                   ends_at=now + timedelta(days=30))  # fmt: skip
    return isoformat_seconds(active.starts_at) or ""


def main_grant(rt: Runtime) -> None:
    rt.catalog.create_feature("acme", "seats", now=NOW, type=FeatureType.USERS)
    grant(rt, "tenant-7", "50", feature="seats", starts_at=START, ends_at=None)


def test_a_sub_block_shows_the_active_grant_over_an_older_expired_one(
    client: TestClient, runtime: Runtime
) -> None:
    main_grant(runtime)
    started = expired_and_active(runtime, "flash_pass")
    block = client.get(PATH, headers=viewer(runtime)).json()["flashPass"]
    assert (block["startDate"], block["quantity"]) == (started, 700)


def test_id_proofing_shows_the_active_grant_over_an_older_expired_one(
    client: TestClient, runtime: Runtime
) -> None:
    main_grant(runtime)
    started = expired_and_active(runtime, "id_proofing")
    (item,) = client.get(PATH, headers=viewer(runtime)).json()["idProofing"]
    assert (item["startDate"], item["quantity"]) == (started, 700)


def test_every_sub_block_is_chosen_by_the_same_rule_as_the_main_entitlement(
    client: TestClient, runtime: Runtime
) -> None:
    main_grant(runtime)
    now = utcnow()
    # TRIAL, so that issuance shows its quantity too.
    terms = {"starts_at": now - timedelta(days=1), "ends_at": now + timedelta(days=30),
             "contract_mode": ContractMode.TRIAL}  # fmt: skip
    blocks = {"sms_voice": "smsVoice", "flash_pass": "flashPass", "printer": "printer",
              "fleet_management": "fleetManagement", "pay_to_print": "payToPrint",
              "issuance": "issuance"}  # fmt: skip
    for key in blocks:
        runtime.catalog.create_feature("acme", key, now=NOW, type=FeatureType.CREDITS)
        grant(runtime, "tenant-7", "1", feature=key, priority=0, **terms)
        use(runtime, key, "1", f"{key}-full")
        grant(runtime, "tenant-7", "9", feature=key, priority=1, **terms)
    body = page(client, runtime)
    shown = {name: body[name]["quantity"] for name in blocks.values()}
    assert shown == dict.fromkeys(blocks.values(), 9)
