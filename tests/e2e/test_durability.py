"""Once /track has answered 200 its records are on disk: a kill -9 right after loses none."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.server import start_server

REQUESTS = 300


def test_kill_9_right_after_answers_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, {"TESSERA_WRITER_FLUSH_INTERVAL_MS": "5"})
    answers: list[dict[str, object]] = []
    try:
        client = server.client(server.token())
        source_id = client.post("/event-source", json={"name": "crash"}).json()["id"]

        def send(index: int) -> dict[str, object]:
            body = {
                "source": {"id": source_id},
                "session": {"id": f"crash-session-{index % 50}"},
                "events": [{"type": "page-view", "properties": {"i": index}}] * 3,
            }
            answer = httpx.post(f"{server.base_url}/track", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            result: dict[str, object] = answer.json()
            return result

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(send, range(REQUESTS)))
        # No graceful shutdown: the process dies with whatever is in flight.
        server.kill()
    finally:
        server.stop()

    restarted = start_server(data_dir, admin_password=server.admin_password)
    try:
        client = restarted.client(restarted.token())
        event_ids = {event_id for answer in answers for event_id in answer["events"]}  # type: ignore[attr-defined]
        assert len(event_ids) == REQUESTS * 3
        missing = [eid for eid in event_ids if client.get(f"/event/{eid}").status_code != 200]
        assert missing == []
        sessions = {answer["session"]["id"] for answer in answers}  # type: ignore[index]
        profiles = {answer["profile"]["id"] for answer in answers}  # type: ignore[index]
        assert len(sessions) == 50 and len(profiles) == 50
        events_per_profile = 0
        for profile_id in profiles:
            profile = client.get(f"/profile/{profile_id}").json()
            assert profile["stats"]["visits"] == 1
            events_per_profile += profile["stats"]["events"]
        assert events_per_profile == REQUESTS * 3
        for session_id in sessions:
            assert client.get(f"/session/{session_id}").status_code == 200
    finally:
        restarted.stop()
