"""The fake HubSpot API behaves like HubSpot where the connector's correctness depends on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.connectors.hubspot.harness import GOOD_TOKEN
from tests.fakes.hubspot import CLOCK_START_MS, FakeHubSpot, rate_limit_fault
from tests.fakes.server import serve

AUTH = {"Authorization": f"Bearer {GOOD_TOKEN}"}


@pytest.fixture
def fake() -> FakeHubSpot:
    return FakeHubSpot(token=GOOD_TOKEN)


@pytest.fixture
def http(fake: FakeHubSpot) -> Iterator[httpx.Client]:
    with serve(fake.app) as served, httpx.Client(base_url=served.base_url) as client:
        yield client


def search(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/crm/v3/objects/contacts/search", json=body, headers=AUTH)


def test_given_more_than_the_cap_when_paging_past_10000_then_the_fake_answers_400(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    fake.add_many("contacts", [CLOCK_START_MS + i for i in range(10_050)])

    last = search(http, {"limit": 200, "after": "9800"})
    past = search(http, {"limit": 200, "after": "10000"})

    assert last.status_code == 200
    assert last.json()["total"] == 10_050
    assert last.json()["paging"]["next"]["after"] == "10000"
    assert past.status_code == 400
    assert past.json()["category"] == "VALIDATION_ERROR"


def test_given_equal_stamps_when_sorting_then_ties_are_not_in_id_order(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    fake.add_many("contacts", [CLOCK_START_MS] * 20)
    sort = [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]

    ids = [int(r["id"]) for r in search(http, {"limit": 20, "sorts": sort}).json()["results"]]

    assert sorted(ids) != ids
    assert ids == [
        int(r["id"]) for r in search(http, {"limit": 20, "sorts": sort}).json()["results"]
    ], "stable between requests"


def test_given_filters_when_searching_then_groups_are_ored_and_filters_anded(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    for i in range(6):
        fake.add("contacts", {"email": f"p{i}@example.com"}, modified_ms=CLOCK_START_MS + i)
    stamp = "lastmodifieddate"
    body = {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": stamp, "operator": "GT", "value": str(CLOCK_START_MS + 4)}
                ]
            },
            {
                "filters": [
                    {"propertyName": stamp, "operator": "EQ", "value": str(CLOCK_START_MS + 1)},
                    {"propertyName": "hs_object_id", "operator": "GT", "value": "1000"},
                ]
            },
        ],
        "sorts": [{"propertyName": stamp, "direction": "ASCENDING"}],
        "properties": ["email", "nonexistent_property"],
        "limit": 10,
    }

    response = search(http, body).json()

    assert [r["properties"]["email"] for r in response["results"]] == [
        "p1@example.com",
        "p5@example.com",
    ]
    assert "nonexistent_property" not in response["results"][0]["properties"]
    assert response["results"][0]["properties"]["lastmodifieddate"] == "2024-01-01T00:00:00.001Z"


def test_given_an_unknown_filter_property_or_big_limit_when_searching_then_400(
    http: httpx.Client,
) -> None:
    unknown = {
        "filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]
    }
    assert search(http, unknown).status_code == 400
    assert search(http, {"limit": 201}).status_code == 400


def test_given_a_wrong_token_when_calling_then_401_invalid_authentication(
    http: httpx.Client,
) -> None:
    response = http.get("/crm/v3/objects/contacts", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"


def test_given_archived_records_when_listing_with_archived_true_then_only_they_page_by_after(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    ids = [fake.add("contacts").id for _ in range(5)]
    for object_id in ids[:3]:
        fake.archive("contacts", object_id)

    first = http.get(
        "/crm/v3/objects/contacts", params={"archived": "true", "limit": 2}, headers=AUTH
    ).json()
    after = first["paging"]["next"]["after"]
    second = http.get(
        "/crm/v3/objects/contacts",
        params={"archived": "true", "limit": 2, "after": after},
        headers=AUTH,
    ).json()

    listed = [r["id"] for r in first["results"] + second["results"]]
    assert listed == [str(i) for i in ids[:3]]
    assert "paging" not in second
    assert all(r["archived"] and r["archivedAt"] for r in first["results"])


def test_given_a_rate_limit_fault_when_calling_then_429_carries_hubspot_headers_and_body(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    fake.inject(rate_limit_fault(lambda _: True, retry_after="2"))

    response = http.get("/crm/v3/objects/contacts", headers=AUTH)

    assert response.status_code == 429
    assert response.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert response.headers["Retry-After"] == "2"
    assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert http.get("/crm/v3/objects/contacts", headers=AUTH).status_code == 200


def test_given_deal_pipelines_when_reading_then_stage_metadata_is_strings(
    http: httpx.Client,
) -> None:
    (default,) = http.get("/crm/v3/pipelines/deals", headers=AUTH).json()["results"]
    stages = {s["id"]: s["metadata"] for s in default["stages"]}
    assert stages["closedwon"] == {"isClosed": "true", "probability": "1.0"}
    assert stages["closedlost"] == {"isClosed": "true", "probability": "0.0"}


def test_given_search_index_lag_when_searching_then_writes_show_only_once_indexed(
    fake: FakeHubSpot, http: httpx.Client
) -> None:
    fake.search_lag_ms = 5_000
    old = fake.add("contacts", {"email": "old@example.com", "hs_lead_status": "NEW"})
    fake.tick(5_000)
    fake.modify("contacts", old.id, {"hs_lead_status": "CONNECTED"})
    new = fake.add("contacts", {"email": "new@example.com"})
    body = {"limit": 10, "properties": ["hs_lead_status", "email"]}

    def found() -> dict[str, str | None]:
        results = search(http, body).json()["results"]
        return {r["id"]: r["properties"]["hs_lead_status"] for r in results}

    # Not yet indexed: the new contact is missing, the modified one is served as it was.
    assert found() == {str(old.id): "NEW"}
    listed = http.get("/crm/v3/objects/contacts", headers=AUTH).json()["results"]
    assert {r["id"] for r in listed} == {str(old.id), str(new.id)}, "listing does not lag"
    fake.tick(4_000)
    assert found() == {str(old.id): "CONNECTED"}
    fake.tick(1_000)
    assert found() == {str(old.id): "CONNECTED", str(new.id): None}
