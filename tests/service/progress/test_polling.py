"""Polled progress reads served from built bytes: 304s while nothing a person would see
changes, a new tag as soon as an input changes, the same figures as a fresh build, and
the documented delays across processes. Time is the injected clock, never slept."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from service.auth.models import ApiToken
from service.main import create_app
from service.okr.models import Period
from service.progress.service import key_result_progress, period_progress
from service.sync.models import Connector
from service.workspaces.models import Workspace
from tests.conftest import FROZEN_NOW, FrozenClock, bearer, issue_token, make_settings
from tests.factories import (
    API,
    check_in,
    make_initiative,
    make_key_result,
    make_objective,
    make_period,
    make_workspace,
    ok,
)
from tests.service.mappings.factories import add_records, make_connector, record_row

TREE = (f"{API}/progress", {"period": "2026"})


def _setup(client: TestClient) -> dict[str, Any]:
    """acme, 2026: O (KR a 0->100 at 45, KR arr 0->1.2M EUR at 600k), an initiative."""
    make_workspace(client)
    year = make_period(client)
    objective = make_objective(client, year["id"], "Grow")
    a = make_key_result(client, objective["id"], "a")
    arr = make_key_result(
        client,
        objective["id"],
        "ARR",
        unit="currency",
        currency="EUR",
        start=0,
        target=1_200_000,
    )
    check_in(client, a["id"], 45)
    check_in(client, arr["id"], 600_000)
    initiative = make_initiative(client, [a["id"]], "Playbook")
    return {"year": year, "objective": objective, "a": a, "arr": arr, "initiative": initiative}


def _poll(client: TestClient, url: str, params: dict[str, Any], etag: str) -> Any:
    return client.get(url, params=params, headers={"If-None-Match": etag})


def test_given_an_unchanged_source_when_the_tree_is_polled_every_second_for_two_minutes_then_304s(
    client: TestClient, clock: FrozenClock
) -> None:
    _setup(client)
    url, params = TREE
    first = client.get(url, params=params)
    assert first.status_code == 200
    etag = first.headers["etag"]
    statuses = []
    for _ in range(120):
        clock.now += timedelta(seconds=1)
        statuses.append(_poll(client, url, params, etag).status_code)
    assert statuses == [304] * 120


def test_given_a_polled_tree_when_a_check_in_is_made_then_the_tag_changes_at_once(
    client: TestClient,
) -> None:
    made = _setup(client)
    url, params = TREE
    etag = client.get(url, params=params).headers["etag"]
    assert _poll(client, url, params, etag).status_code == 304
    check_in(client, made["a"]["id"], 51)
    changed = _poll(client, url, params, etag)
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["objectives"][0]["key_results"][0]["value"] == 51


@pytest.mark.parametrize(
    "edit",
    [
        "key_result",
        "objective",
        "period",
        "initiative",
        "initiative_links",
        "workspace_margins",
        "new_objective",
        "delete_key_result",
    ],
)
def test_given_a_polled_tree_when_an_input_is_edited_then_the_tag_changes(
    client: TestClient, edit: str
) -> None:
    made = _setup(client)
    url, params = TREE
    etag = client.get(url, params=params).headers["etag"]
    a, objective = made["a"]["id"], made["objective"]["id"]
    if edit == "key_result":
        ok(client.patch(f"{API}/key-results/{a}", json={"target": 200}))
    elif edit == "objective":
        ok(client.patch(f"{API}/objectives/{objective}", json={"title": "Grow more"}))
    elif edit == "period":
        ok(client.patch(f"{API}/periods/{made['year']['id']}", json={"end": "2026-12-01"}))
    elif edit == "initiative":
        iid = made["initiative"]["id"]
        ok(client.patch(f"{API}/initiatives/{iid}", json={"status": "done"}))
    elif edit == "initiative_links":
        make_initiative(client, [made["arr"]["id"]], "Upsell")
    elif edit == "workspace_margins":
        # a (0.45 of an expected 0.5) goes from on track to at risk.
        ok(client.patch(f"{API}/workspaces/acme", json={"on_track_margin": 0.01}))
    elif edit == "new_objective":
        make_objective(client, made["year"]["id"], "Another")
    else:
        assert client.delete(f"{API}/key-results/{a}").status_code == 204
    assert _poll(client, url, params, etag).status_code == 200


def test_given_a_polled_key_result_when_its_mapping_changes_then_the_tag_changes(
    client: TestClient, engine: Engine
) -> None:
    made = _setup(client)
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == "acme")).one()
        connector = make_connector(session, ws, last_success_at=FROZEN_NOW, interval=3600)
        add_records(
            session,
            [
                record_row(connector, "lead", source_id="L1", status="Qualified"),
                record_row(connector, "lead", source_id="L2", status="Open"),
            ],
        )
        session.commit()
        connector_id = connector.id
    url = f"{API}/key-results/{made['a']['id']}/progress"
    etag = client.get(url).headers["etag"]
    spec = {"type": "count", "connector_id": connector_id, "kind": "lead"}
    mapping = client.post(f"{API}/mappings", json={"key_result_id": made["a"]["id"], "spec": spec})
    assert mapping.status_code == 201, mapping.text
    bound = _poll(client, url, {}, etag)
    assert bound.status_code == 200
    assert bound.json()["last_synced_at"] is not None
    etag = bound.headers["etag"]
    spec["filters"] = [{"field": "status", "op": "eq", "value": "Qualified"}]
    ok(client.put(f"{API}/mappings/{mapping.json()['id']}", json={"spec": spec}))
    narrowed = _poll(client, url, {}, etag)
    assert narrowed.status_code == 200
    assert (bound.json()["value"], narrowed.json()["value"]) == (2, 1)
    etag = narrowed.headers["etag"]
    assert client.delete(f"{API}/mappings/{mapping.json()['id']}").status_code == 204
    assert _poll(client, url, {}, etag).status_code == 200


def test_given_a_mapped_key_result_when_a_sync_changes_nothing_then_the_tag_stays_until_stale(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    made = _setup(client)
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == "acme")).one()
        connector = make_connector(session, ws, last_success_at=FROZEN_NOW, interval=600)
        session.commit()
        connector_id = connector.id
    spec = {"type": "count", "connector_id": connector_id, "kind": "lead"}
    bound = client.post(f"{API}/mappings", json={"key_result_id": made["a"]["id"], "spec": spec})
    assert bound.status_code == 201, bound.text
    url = f"{API}/key-results/{made['a']['id']}/progress"
    first = client.get(url)
    etag = first.headers["etag"]
    assert first.json()["last_synced_at"] == "2026-07-02T12:00:00Z"

    # A sync that found nothing new: only the sync time moves.
    clock.now = FROZEN_NOW + timedelta(minutes=5)
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        row.last_success_at = clock.now
        session.commit()
    assert _poll(client, url, {}, etag).status_code == 304
    fresh = client.get(url)
    assert fresh.headers["etag"] == etag
    assert fresh.json()["last_synced_at"] == "2026-07-02T12:05:00Z"

    # No sync for longer than the interval: `stale` flips by time alone, and so does the tag.
    clock.now = FROZEN_NOW + timedelta(minutes=15)
    assert _poll(client, url, {}, etag).status_code == 304
    clock.now = FROZEN_NOW + timedelta(minutes=15, microseconds=1)
    stale = _poll(client, url, {}, etag)
    assert stale.status_code == 200
    assert stale.json()["stale"] is True


def test_given_a_cron_schedule_then_values_turn_stale_when_its_next_fire_passes_unsynced(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    """`0 9 * * 1-5` (weekdays at 09:00) with a 15-minute interval left at its default:
    the cron, not the interval, says when the last good sync is too old."""
    made = _setup(client)
    synced = datetime(2026, 7, 3, 9, 0, 4, tzinfo=UTC)  # Friday's run, 4 s after its fire
    assert synced.weekday() == 4
    clock.now = synced + timedelta(minutes=1)
    with Session(engine) as session:
        ws = session.exec(select(Workspace).where(Workspace.slug == "acme")).one()
        connector = make_connector(
            session, ws, last_success_at=synced, interval=900, cron="0 9 * * 1-5"
        )
        session.commit()
        connector_id = connector.id
    spec = {"type": "count", "connector_id": connector_id, "kind": "lead"}
    bound = client.post(f"{API}/mappings", json={"key_result_id": made["a"]["id"], "spec": spec})
    assert bound.status_code == 201, bound.text
    url = f"{API}/key-results/{made['a']['id']}/progress"
    assert client.get(url).json()["stale"] is False

    # Long past the interval, but the weekend has no fire time: still fresh on Monday 09:00.
    monday_fire = datetime(2026, 7, 6, 9, 0, tzinfo=UTC)
    assert monday_fire.weekday() == 0
    clock.now = monday_fire
    fresh = client.get(url)
    assert fresh.json()["stale"] is False
    etag = fresh.headers["etag"]
    assert _poll(client, url, {}, etag).status_code == 304
    assert ok(client.get(f"{API}/connectors/{connector_id}"))["stale"] is False
    # Monday's fire passed with no successful sync since Friday's: stale, the tag changes.
    clock.now = monday_fire + timedelta(microseconds=1)
    stale = _poll(client, url, {}, etag)
    assert stale.status_code == 200
    assert stale.json()["stale"] is True
    assert ok(client.get(f"{API}/connectors/{connector_id}"))["stale"] is True

    # Monday's sync succeeds: fresh until Tuesday 09:00.
    with Session(engine) as session:
        row = session.get(Connector, connector_id)
        assert row is not None
        row.last_success_at = monday_fire + timedelta(seconds=3)
        session.commit()
    clock.now = datetime(2026, 7, 7, 8, 59, tzinfo=UTC)
    assert client.get(url).json()["stale"] is False


def test_given_expected_progress_in_steps_when_time_crosses_a_step_then_the_tag_changes(
    client: TestClient, clock: FrozenClock
) -> None:
    """A 41-day window: expected progress moves by 0.001 every 59 minutes, not between."""
    make_workspace(client)
    period = make_period(client, "short", "2026-07-01", "2026-08-11")  # 41 days = 984 h
    kr = make_key_result(client, make_objective(client, period["id"])["id"])
    check_in(client, kr["id"], 10, at="2026-07-01T01:00:00Z")
    url = f"{API}/key-results/{kr['id']}/progress"
    window = timedelta(days=41)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    step_500 = start + window * 500 / 1000
    clock.now = step_500 - timedelta(seconds=1)
    before = client.get(url)
    assert before.json()["expected_progress"] == 0.499
    clock.now = step_500
    at = _poll(client, url, {}, before.headers["etag"])
    assert at.status_code == 200
    assert at.json()["expected_progress"] == 0.5
    clock.now = step_500 + window / 1000 - timedelta(seconds=1)
    assert _poll(client, url, {}, at.headers["etag"]).status_code == 304
    clock.now = step_500 + window / 1000
    assert _poll(client, url, {}, at.headers["etag"]).json()["expected_progress"] == 0.501


def test_given_an_arr_forecast_when_time_moves_within_a_step_then_it_does_not_move(
    client: TestClient, clock: FrozenClock
) -> None:
    made = _setup(client)
    url = f"{API}/key-results/{made['arr']['id']}/progress"
    first = client.get(url)
    body = first.json()
    # 600k at exactly half the year: 1.2M, shown to 0.1% of the 1.2M range (1,200 EUR).
    assert body["expected_progress"] == 0.5
    assert body["forecast"] == 1_200_000
    clock.now += timedelta(hours=8)  # a step of a year is 8.76 h
    assert _poll(client, url, {}, first.headers["etag"]).status_code == 304
    clock.now += timedelta(hours=1)
    moved = _poll(client, url, {}, first.headers["etag"])
    assert moved.status_code == 200
    assert moved.json()["forecast"] == 1_197_600  # 600k / 0.501, rounded to 1,200


def test_given_cached_reads_then_they_equal_a_fresh_build_of_the_progress_service(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    made = _setup(client)
    for hours in (0, 5, 37, 1000):
        clock.now = FROZEN_NOW + timedelta(hours=hours)
        tree = client.get(TREE[0], params=TREE[1])
        kr = client.get(f"{API}/key-results/{made['arr']['id']}/progress")
        with Session(engine) as session:
            ws = session.exec(select(Workspace).where(Workspace.slug == "acme")).one()
            period = session.exec(select(Period).where(Period.workspace_id == ws.id)).one()
            expected_tree = period_progress(session, ws, period, clock.now)
            from service.okr.models import KeyResult

            row = session.get(KeyResult, made["arr"]["id"])
            assert row is not None
            [expected_kr] = key_result_progress(session, ws, [row], clock.now)
        assert tree.json() == json.loads(expected_tree.model_dump_json())
        assert kr.json() == json.loads(expected_kr.model_dump_json())
        raw = (clock.now - datetime(2026, 1, 1, tzinfo=UTC)) / timedelta(days=365)
        assert 0 <= raw - kr.json()["expected_progress"] < 0.001


@pytest.mark.parametrize(
    "header", ["garbage", '"unterminated', "W/", ",,,", '"a" "b"', 'W/W/"x"', '"\x7f"', " "]
)
def test_given_a_malformed_if_none_match_when_polled_then_it_is_ignored(
    client: TestClient, header: str
) -> None:
    _setup(client)
    response = client.get(TREE[0], params=TREE[1], headers={"If-None-Match": header})
    assert response.status_code == 200
    assert response.headers["vary"] == "Authorization, X-Workspace"
    assert response.headers["cache-control"] == "private, no-cache"


def test_given_a_quoted_tag_with_a_comma_when_listed_then_the_list_still_parses(
    client: TestClient,
) -> None:
    _setup(client)
    etag = client.get(TREE[0], params=TREE[1]).headers["etag"]
    listed = _poll(client, TREE[0], TREE[1], f'"a,b", W/"x" ,{etag}')
    assert listed.status_code == 304
    assert listed.headers["etag"] == etag


@pytest.fixture
def second_process(database_url: str, clock: FrozenClock) -> Iterator[TestClient]:
    """Another API process on the same database: its own engine, caches and listeners."""
    from service.db import make_engine

    other_engine = make_engine(database_url)
    app = create_app(make_settings(database_url), other_engine, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(issue_token(other_engine)))
        yield c
    other_engine.dispose()


def _revoke_elsewhere(engine: Engine, name: str, at: datetime) -> None:
    """As `okr-sync tokens revoke` in another process: no ORM event reaches this one."""
    with engine.begin() as conn:
        conn.execute(
            update(ApiToken.__table__)  # type: ignore[attr-defined]
            .where(ApiToken.__table__.c.name == name)  # type: ignore[attr-defined]
            .values(revoked_at=at)
        )


def _background_done(cache: Any) -> None:
    """Waits (real time, at most 10 s) for the cache's background renewals and rebuilds:
    they run on the app's own event loop."""
    deadline = time.monotonic() + 10
    while cache._background and time.monotonic() < deadline:
        time.sleep(0.005)


def test_given_two_processes_when_one_writes_then_the_other_sees_it_within_the_check_delay(
    client: TestClient, second_process: TestClient, clock: FrozenClock
) -> None:
    made = _setup(client)
    url, params = TREE
    etag = second_process.get(url, params=params).headers["etag"]
    check_in(client, made["a"]["id"], 70)
    # OKR_PROGRESS_VERSION_CHECK_SECONDS (1 s): the other process may answer from its
    # cache until then, never after.
    assert _poll(second_process, url, params, etag).status_code == 304
    clock.now += timedelta(seconds=1)
    changed = _poll(second_process, url, params, etag)
    assert changed.status_code == 200
    assert changed.headers["etag"] == client.get(url, params=params).headers["etag"]


def test_given_a_check_nearly_due_when_polled_from_memory_then_a_background_check_renews_it(
    client: TestClient, second_process: TestClient, clock: FrozenClock
) -> None:
    made = _setup(client)
    url, params = TREE
    first = second_process.get(url, params=params)
    etag = first.headers["etag"]
    assert _poll(second_process, url, params, etag).status_code == 304  # now in memory
    check_in(client, made["a"]["id"], 70)
    clock.now += timedelta(seconds=0.8)  # three quarters of the 1 s delay: renewed ahead
    # Answered from memory (the old tag, still within the delay) while the check runs in
    # the background, then the new tag, before the delay ran out.
    seen = [_poll(second_process, url, params, etag).status_code]
    deadline = time.monotonic() + 10  # real time: the check runs on the app's own loop
    while seen[-1] == 304 and time.monotonic() < deadline:
        time.sleep(0.01)
        seen.append(_poll(second_process, url, params, etag).status_code)
    assert seen[0] == 304
    assert seen[-1] == 200, "the background check never refreshed the workspace's version"


def test_given_a_change_elsewhere_when_the_background_check_finds_it_then_reads_stay_in_memory(
    client: TestClient, second_process: TestClient, clock: FrozenClock
) -> None:
    from service.progress.polling import cache_of

    made = _setup(client)
    url, params = TREE
    kr_url = f"{API}/key-results/{made['a']['id']}/progress"
    tree_tag = second_process.get(url, params=params).headers["etag"]
    kr_tag = second_process.get(kr_url).headers["etag"]
    cache = cache_of(second_process.app.state)  # type: ignore[attr-defined]
    check_in(client, made["a"]["id"], 70)  # another process writes
    clock.now += timedelta(seconds=0.8)  # the background check is due
    assert _poll(second_process, url, params, tree_tag).status_code == 304
    _background_done(cache)
    # The check found the change and built both representations again before publishing
    # it: the next reads answer the new bytes from memory, none waits for a build.
    hits = cache.memory_hits
    tree = _poll(second_process, url, params, tree_tag)
    progress = _poll(second_process, kr_url, {}, kr_tag)
    assert (tree.status_code, progress.status_code) == (200, 200)
    assert cache.memory_hits == hits + 2, "a read waited for a build"
    assert progress.json()["value"] == 70
    assert tree.headers["etag"] == client.get(url, params=params).headers["etag"]


def test_given_a_token_revoked_elsewhere_when_polling_then_it_stops_within_the_cache_delay(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    _setup(client)
    token = issue_token(engine, name="dashboard")
    url, params = TREE
    assert client.get(url, params=params, headers=bearer(token)).status_code == 200
    _revoke_elsewhere(engine, "dashboard", clock.now)
    assert client.get(url, params=params, headers=bearer(token)).status_code == 200
    clock.now += timedelta(seconds=5)  # OKR_TOKEN_CACHE_SECONDS
    assert client.get(url, params=params, headers=bearer(token)).status_code == 401


def test_given_a_token_revoked_through_the_api_when_polling_then_it_stops_at_once(
    client: TestClient, engine: Engine
) -> None:
    _setup(client)
    url, params = TREE
    created = client.post(
        f"{API}/tokens", json={"name": "dash", "role": "viewer"}, headers={"X-Workspace": "acme"}
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert client.get(url, params=params, headers=bearer(token)).status_code == 200
    deleted = client.delete(f"{API}/tokens/{created.json()['id']}", headers={"X-Workspace": "acme"})
    assert deleted.status_code in (200, 204)
    assert client.get(url, params=params, headers=bearer(token)).status_code == 401


def test_given_the_demo_when_a_sync_brings_new_answers_then_the_polled_tag_changes_at_once(
    client: TestClient, engine: Engine, database_url: str, clock: FrozenClock
) -> None:
    from service.demo import demo_connector_id, load_tartempion
    from service.okr.models import KeyResult, Unit
    from service.sync.engine import SyncEngine

    with Session(engine, expire_on_commit=False) as s:
        assert load_tartempion(s, clock.now) is not None
        s.commit()
        connector_id = demo_connector_id(s)
        assert connector_id is not None
        row = s.get(Connector, connector_id)
        assert row is not None
        row.config = row.config | {"size": 300}
        s.commit()
        nps = s.exec(select(KeyResult).where(KeyResult.unit == Unit.score)).first()
        assert nps is not None
    sync = SyncEngine(engine, make_settings(database_url), clock=clock)
    assert sync.run(connector_id).status == "succeeded"
    url = f"{API}/key-results/{nps.id}/progress"
    headers = {"X-Workspace": "tartempion"}
    first = client.get(url, headers=headers)
    assert first.status_code == 200
    etag = first.headers["etag"]
    clock.now += timedelta(seconds=30)
    assert client.get(url, headers=headers | {"If-None-Match": etag}).status_code == 304
    clock.now += timedelta(minutes=10)  # the live survey answers every two minutes
    assert sync.run(connector_id).status == "succeeded"
    after = client.get(url, headers=headers | {"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["responses"] > first.json()["responses"]


def test_given_a_polled_workspace_when_it_is_deleted_then_its_reads_are_404_at_once(
    client: TestClient,
) -> None:
    _setup(client)
    url, params = TREE
    headers = {"X-Workspace": "acme"}
    etag = client.get(url, params=params, headers=headers).headers["etag"]
    assert client.delete(f"{API}/workspaces/acme").status_code == 204
    gone = client.get(url, params=params, headers=headers | {"If-None-Match": etag})
    assert gone.status_code == 404
    assert gone.json()["field"] == "X-Workspace"


def _until(client: TestClient, url: str, params: dict[str, str], token: str, status: int) -> int:
    """Polls (the injected clock standing still) until `status` or 10 s of real time: a
    background renewal runs on the app's own event loop."""
    deadline = time.monotonic() + 10
    answer = client.get(url, params=params, headers=bearer(token)).status_code
    while answer != status and time.monotonic() < deadline:
        time.sleep(0.01)
        answer = client.get(url, params=params, headers=bearer(token)).status_code
    return answer


def test_given_steady_polling_when_the_token_cache_nears_its_delay_then_it_is_renewed_ahead(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    _setup(client)
    token = issue_token(engine, name="dashboard")
    url, params = TREE
    assert client.get(url, params=params, headers=bearer(token)).status_code == 200
    clock.now += timedelta(seconds=4)  # past three quarters of OKR_TOKEN_CACHE_SECONDS (5)
    _revoke_elsewhere(engine, "dashboard", clock.now)
    # The background renewal finds the revocation before the cache delay ran out.
    assert _until(client, url, params, token, 401) == 401


def test_given_steady_polling_when_the_token_is_renewed_ahead_then_memory_keeps_answering(
    client: TestClient, engine: Engine, clock: FrozenClock
) -> None:
    from service.progress.polling import cache_of

    _setup(client)
    token = issue_token(engine, name="dashboard")
    url, params = TREE
    etag = client.get(url, params=params, headers=bearer(token)).headers["etag"]
    cache = cache_of(client.app.state)  # type: ignore[attr-defined]
    # A dashboard polling every 0.8 s for over a minute: the workspace's version (1 s
    # delay), the token (5 s) and its last use (recorded every minute) are all renewed in
    # the background ahead of their delays, so no read ever waits for a lookup.
    for _ in range(80):
        clock.now += timedelta(seconds=0.8)
        hits = cache.memory_hits
        headers = bearer(token) | {"If-None-Match": etag}
        assert client.get(url, params=params, headers=headers).status_code == 304
        assert cache.memory_hits == hits + 1, "a polled read waited for a lookup"
        _background_done(cache)
