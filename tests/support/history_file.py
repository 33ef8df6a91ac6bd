"""A small history file with known answers: visitors whose sessions are spread over three
years, written half in Tracardi's event shape and half in Tessera's, in shuffled order."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2023, 12, 20, tzinfo=UTC)
SPAN = timedelta(days=3 * 365 - 40)


@dataclass
class Planned:
    # profile id -> session id -> times of its events
    profiles: dict[str, dict[str, list[datetime]]] = field(default_factory=dict)
    # event id -> time
    events: dict[str, datetime] = field(default_factory=dict)
    # ids of events the import must refuse, and why
    refused: dict[str, str] = field(default_factory=dict)

    def first_seen(self, profile_id: str) -> datetime:
        return min(min(times) for times in self.profiles[profile_id].values())

    def event_count(self, profile_id: str) -> int:
        return sum(len(times) for times in self.profiles[profile_id].values())


def tessera_line(
    event_id: str, kind: str, at: datetime, profile: str | None, session: str | None
) -> dict[str, Any]:
    return {
        "id": event_id,
        "tenant": "default",
        "type": kind,
        "time": at.isoformat(),
        "metadata": {"insert": at.isoformat(), "status": "collected"},
        "source": {"id": "old-site"},
        "profile": {"id": profile} if profile else None,
        "session": {"id": session} if session else None,
        "properties": {"url": f"https://shop.example/{kind}"},
        "tags": ["imported"],
    }


def tracardi_line(
    event_id: str, kind: str, at: datetime, profile: str | None, session: str | None
) -> dict[str, Any]:
    # Tracardi writes naive UTC times and keeps tags as {"values", "count"}.
    naive = at.astimezone(UTC).replace(tzinfo=None).isoformat()
    return {
        "id": event_id,
        "type": kind,
        "metadata": {"time": {"insert": naive, "process_time": 0.01}, "status": "collected"},
        "source": {"id": "tracardi-web"},
        "profile": {"id": profile} if profile else None,
        "session": {"id": session, "start": naive, "duration": 0},
        "properties": {"page": kind},
        "context": {"browser": "test"},
        "tags": {"values": ["old"], "count": 1},
    }


def write_history(path: Path, tag: str, *, profiles: int, seed: int, refused: bool) -> Planned:
    rng = random.Random(seed)
    planned = Planned()
    lines: list[dict[str, Any]] = []
    number = 0
    for p in range(profiles):
        profile_id = f"{tag}-p{p}"
        sessions: dict[str, list[datetime]] = {}
        for s in range(rng.randint(1, 4)):
            session_id = f"{tag}-p{p}-s{s}"
            at = START + timedelta(seconds=rng.randint(0, int(SPAN.total_seconds())))
            shape = tracardi_line if (p + s) % 2 else tessera_line
            times: list[datetime] = []
            for _ in range(rng.randint(1, 5)):
                at += timedelta(seconds=rng.randint(5, 600))
                event_id = f"{tag}-e{number}"
                number += 1
                times.append(at)
                planned.events[event_id] = at
                lines.append(shape(event_id, "page-view", at, profile_id, session_id))
            sessions[session_id] = times
        planned.profiles[profile_id] = sessions
    # No profile, no session: stored as a profile-less event.
    lonely = START + timedelta(days=400)
    planned.events[f"{tag}-lonely"] = lonely
    lines.append(tessera_line(f"{tag}-lonely", "audit", lonely, None, None))
    if refused:
        old = datetime(1990, 5, 1, tzinfo=UTC)
        planned.refused[f"{tag}-old"] = "time before 2000-01-01"
        lines.append(tessera_line(f"{tag}-old", "page-view", old, f"{tag}-p0", f"{tag}-p0-old"))
    rng.shuffle(lines)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return planned
