"""Errors classified, effects applied once, against the real Elasticsearch (distributed mode).

- A record Elasticsearch refuses for what it is (here: an event whose month partition was
  made, by hand, with a mapping its search terms do not fit, a 400) is a permanent error: the
  async worker gives the message to the dead letters after its attempts, with Elasticsearch's
  reason, while every other visitor's messages are stored meanwhile; nothing of the refused
  request is counted (its profile is never written with an event it does not have); replayed
  once the cause is gone, it is stored and counted once. Before the fix the refusal was
  "storage unavailable", retried every 30 s forever, and each retry counted the request again.
- A commit cut short in the middle (the profile's partition write-blocked after the event was
  stored) is retried until it passes; the event stored by the first attempt is counted once,
  neither lost nor counted twice, in sync (the client retries the same body) and async mode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from tests.support.distributed import NO_REFRESH_ENV
from tests.support.elastic import URL as ELASTIC_URL
from tests.support.elastic import make_searchable
from tests.support.modes import server_in_mode, wait_until_drained
from tests.support.server import RunningServer

OTHERS = 60
# Nested search entries an event index takes while the test narrows it: a page view has
# about 35, the refused event (100 properties) about 135.
# How far back the refused event is dated: a month partition nothing else writes into.
POISON_AGE = timedelta(days=150)
FAST_RETRIES = {
    "TESSERA_WORKER_MAX_ATTEMPTS": "3",
    "TESSERA_WORKER_RETRY_BACKOFF_MS": "100",
    "TESSERA_WORKER_CONCURRENCY": "16",
    **NO_REFRESH_ENV,
}


@pytest.fixture(params=["distributed-async"], scope="module")
def async_installation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("apply-once") / "data"
    with server_in_mode(request.param, data_dir, FAST_RETRIES) as server:
        yield server


def _prefix(server: RunningServer) -> str:
    return server.env["TESSERA_ELASTIC_INDEX_PREFIX"]


def _track(client: httpx.Client, body: dict[str, Any], *, retry_503: bool = True) -> httpx.Response:
    for _attempt in range(60):
        answer = client.post("/track", json={"source": {"id": "errors"}, **body})
        if answer.status_code != 503 or not retry_503:
            return answer
        time.sleep(0.5)
    return answer


def _eventually(check: Any, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _setup_source(server: RunningServer) -> httpx.Client:
    api = server.client(server.token())
    answer = api.post("/event-source", json={"id": "errors", "name": "Errors"})
    assert answer.status_code in (200, 201, 409), answer.text
    return api


def _counted(api: httpx.Client, profile_id: str) -> tuple[int | None, int | None]:
    """(stats.events, events stored under the profile's ids), None when there is no profile."""
    answer = api.get(f"/profile/{profile_id}")
    if answer.status_code != 200:
        return None, None
    make_searchable()  # the listing below is a search: see every acknowledged event
    stored = api.get(f"/profile/{profile_id}/events", params={"limit": 1}).json()["total"]
    return answer.json()["stats"]["events"], stored


def test_a_refused_record_is_dead_lettered_while_other_visitors_flow(
    async_installation: RunningServer,
) -> None:
    server = async_installation
    api = _setup_source(server)
    visitor = server.client()
    assert _track(visitor, {"events": [{"type": "page-view"}]}).status_code == 200
    wait_until_drained(api)  # the event partition exists now
    elastic = Elasticsearch(ELASTIC_URL, request_timeout=30)
    # The partition of a month five months back, made before any event goes there, with the
    # search terms mapped as numbers: an event filed there is refused (400, a parsing error)
    # for what it is, and every other event (this month's) is not.
    when = datetime.now(UTC) - POISON_AGE
    poisoned = f"{_prefix(server)}.default.event.v1-{when:%Y-%m}"
    elastic.indices.create(index=poisoned, mappings={"properties": {"sk": {"type": "long"}}})
    try:
        poison_session = f"poison-{uuid.uuid4().hex[:8]}"
        poison = _track(
            visitor,
            {
                "session": {"id": poison_session},
                "events": [
                    {"type": "bulky", "time": when.isoformat(), "properties": {"k": "text"}}
                ],
            },
        )
        assert poison.status_code == 200, poison.text
        poison_profile = poison.json()["profile"]["id"]
        started = time.monotonic()

        def send(number: int) -> str:
            answer = _track(
                visitor,
                {
                    "session": {"id": f"other-{number}-{uuid.uuid4().hex[:6]}"},
                    "events": [{"type": "page-view"}],
                },
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["profile"]["id"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            others = list(pool.map(send, range(OTHERS)))

        def all_stored() -> bool:
            return all(_counted(api, profile_id) == (1, 1) for profile_id in others)

        assert _eventually(all_stored, 90), "other visitors' events were not all stored"
        flowed_s = time.monotonic() - started

        def buried() -> list[dict[str, Any]]:
            letters = api.get("/queue/dead-letters").json()["result"]
            return [letter for letter in letters if poison_session in letter.get("key", "")]

        letters = _eventually(buried, 60)
        assert letters, "the refused message did not become a dead letter"
        assert "pars" in letters[0]["error"].lower(), letters[0]["error"]
        # Nothing of the refused request was counted: no profile was written for it.
        assert _counted(api, poison_profile) == (None, None)
        print(
            f"\n{OTHERS} other visitors stored {flowed_s:.1f} s after the refused message; "
            f"dead letter after {letters[0]['attempts']} attempts: {letters[0]['error'][:120]}"
        )
    finally:
        # The cause goes: the hand-made partition (the refused event never got into it).
        elastic.indices.delete(index=poisoned)
        elastic.close()

    # The cause is gone: replayed, the request is stored and counted once.
    replayed = api.post(f"/queue/dead-letters/{letters[0]['id']}/replay")
    assert replayed.status_code in (200, 202), replayed.text
    wait_until_drained(api)
    assert _eventually(lambda: _counted(api, poison_profile) == (1, 1), 60), _counted(
        api, poison_profile
    )


@pytest.mark.parametrize("mode", ["distributed-sync", "distributed-async"])
def test_a_commit_cut_short_is_completed_and_counted_once(mode: str, tmp_path: Path) -> None:
    with server_in_mode(mode, tmp_path / "data", FAST_RETRIES) as server:
        api = _setup_source(server)
        visitor = server.client()
        session = f"cut-{uuid.uuid4().hex[:8]}"
        first = _track(visitor, {"session": {"id": session}, "events": [{"type": "page-view"}]})
        profile_id = first.json()["profile"]["id"]
        wait_until_drained(api)
        assert _counted(api, profile_id) == (1, 1)
        elastic = Elasticsearch(ELASTIC_URL, request_timeout=30)
        profiles = f"{_prefix(server)}.default.profile*"
        body = {
            "session": {"id": session},
            "profile": {"id": profile_id},
            "events": [{"id": f"cut-{uuid.uuid4().hex}", "type": "page-view"}],
        }
        try:
            # Events go first, the profile after: blocked, its write fails after the event.
            elastic.indices.put_settings(index=profiles, settings={"index.blocks.write": True})
            answer = _track(visitor, body, retry_503=False)
            if mode == "distributed-sync":
                assert answer.status_code == 503, answer.text
                assert answer.headers.get("retry-after")
            else:
                assert answer.status_code == 200, answer.text
            time.sleep(8)  # the async worker keeps retrying meanwhile
        finally:
            elastic.indices.put_settings(index=profiles, settings={"index.blocks.write": None})
            elastic.close()
        if mode == "distributed-sync":
            again = _track(visitor, body)  # the client retries the same request
            assert again.status_code == 200, again.text
        wait_until_drained(api)
        assert _eventually(lambda: _counted(api, profile_id) == (2, 2), 60), _counted(
            api, profile_id
        )
        assert api.get(f"/session/{session}").json()["events"] == 2
