"""Re-segmentation: one segment (or all of them) evaluated again on every profile of a tenant.

Started when a segment is created, edited, enabled, disabled or deleted. A job runs in the
background on the server's event loop and pages through the profiles newest first with a
keyset cursor (``page_size`` at a time). For each page it holds the locks of the page's
profiles (the same keys ingest takes, so a request and the job never change one profile at the
same time), reads each profile again under its lock through the visitor directory (the cache is
what ingest reads, so it must never hold an older version than the store), and commits the
changed profiles with their ``segment-entered`` / ``segment-left`` events in one change set.

Segment definitions are read again for every page (from the live cache, which the API clears
on every change): a job that runs while its segment is edited switches to the new condition, so
whichever job touches a profile last leaves it right. A newer job for the same segment (or one
for all segments) supersedes a running one, which stops at its next page.

Membership is derived data: the job does not move ``metadata.time.update``, so its own writes
never move a profile within the order it pages in. Profiles a request changed while the job ran
did move (to the front, behind the cursor); a second, catch-up pass visits the profiles updated
since the job started. Progress (``processed`` of ``total``) is an estimate: ``total`` is the
count when the first page was read.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from tessera.core.locks import Locks
from tessera.identity.locking import profile_lock_key
from tessera.identity.visitor import VisitorDirectory
from tessera.model.common import new_id, utcnow
from tessera.model.event import Event
from tessera.model.profile import Profile
from tessera.segments.events import membership_events
from tessera.segments.live import LiveSegments, TenantSegments
from tessera.segments.membership import LiveSegment, update_membership
from tessera.storage.ports import ChangeSet, ProfileStore, RecordWriter
from tessera.storage.search import Cursor, SearchRequest

log = logging.getLogger(__name__)

JobState = Literal["running", "done", "failed", "cancelled"]


@dataclass(slots=True)
class Job:
    id: str
    tenant: str
    # None: every segment of the tenant.
    segment_id: str | None
    state: JobState
    started: datetime
    total: int = 0
    processed: int = 0
    # Profiles whose segments changed, and how many entries and exits that made.
    changed: int = 0
    entered: int = 0
    left: int = 0
    finished: datetime | None = None
    error: str | None = None


class _Superseded(Exception):
    pass


class ResegmentationJobs:
    def __init__(
        self,
        segments: LiveSegments,
        profiles: ProfileStore,
        visitors: VisitorDirectory,
        writer: RecordWriter,
        locks: Locks,
        *,
        page_size: int = 500,
        keep: int = 100,
    ) -> None:
        self._segments = segments
        self._profiles = profiles
        self._visitors = visitors
        self._writer = writer
        self._locks = locks
        self._page_size = page_size
        self._keep = keep
        # Newest last; finished jobs beyond ``keep`` are dropped oldest first.
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Running job id → the id of the job that supersedes it.
        self._superseded: dict[str, str] = {}

    def start(self, tenant: str, segment_id: str | None, *, name: str | None = None) -> Job:
        """Start a job in the background and answer it at once. ``name``: the segment's name,
        for the ``segment-left`` events of a segment that is deleted by then."""
        job = Job(
            id=new_id(), tenant=tenant, segment_id=segment_id, state="running", started=utcnow()
        )
        for other in self._jobs.values():
            if (
                other.state == "running"
                and other.tenant == tenant
                and (segment_id is None or other.segment_id == segment_id)
            ):
                self._superseded[other.id] = job.id
        self._jobs[job.id] = job
        self._trim()
        task = asyncio.get_running_loop().create_task(self._run(job, name))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _done: self._tasks.pop(job.id, None))
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def list(self, tenant: str) -> builtins.list[Job]:
        """The tenant's jobs still kept, newest first."""
        return [job for job in reversed(self._jobs.values()) if job.tenant == tenant]

    async def wait(self, job_id: str) -> Job | None:
        """The job once it has ended (at once when it has)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait([task])
        return self._jobs.get(job_id)

    async def stop(self) -> None:
        """Cancel every running job (the server is stopping) and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _trim(self) -> None:
        finished = [job.id for job in self._jobs.values() if job.state != "running"]
        for job_id in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job_id]

    async def _run(self, job: Job, name: str | None) -> None:
        try:
            await self._pass(job, name, since=None)
            await self._pass(job, name, since=job.started)
            job.state = "done"
        except _Superseded:
            job.state = "cancelled"
            job.error = f"superseded by job {self._superseded.get(job.id)}"
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.error = "the server stopped"
            raise
        except Exception as exc:
            log.exception("re-segmentation job %s failed", job.id)
            job.state = "failed"
            job.error = str(exc) or type(exc).__name__
        finally:
            job.finished = utcnow()
            job.total = max(job.total, job.processed)
            self._superseded.pop(job.id, None)

    async def _pass(self, job: Job, name: str | None, *, since: datetime | None) -> None:
        """Every profile, newest first; with ``since``: only those updated after it."""
        cursor: Cursor | None = None
        while True:
            if job.id in self._superseded:
                raise _Superseded
            page = await self._profiles.search(
                job.tenant, SearchRequest(condition=None, limit=self._page_size, cursor=cursor)
            )
            profiles = page.items
            if since is None and cursor is None:
                job.total = page.total
            if since is not None:
                profiles = [p for p in profiles if p.metadata.time.update > since]
                job.total = max(job.total, job.processed + len(profiles))
            if profiles:
                await self._page(job, [p.id for p in profiles], name)
            if page.next_cursor is None or len(profiles) < len(page.items):
                return
            cursor = Cursor.decode(page.next_cursor)

    async def _page(self, job: Job, profile_ids: builtins.list[str], name: str | None) -> None:
        tenant = job.tenant
        async with self._locks.hold_all(profile_lock_key(tenant, i) for i in profile_ids) as held:
            evaluated, removed, names = _plan(job, await self._segments.for_tenant(tenant), name)
            now = utcnow()
            changed: builtins.list[Profile] = []
            events: builtins.list[Event] = []
            for profile_id in profile_ids:
                profile = await self._visitors.profile(tenant, profile_id)
                if profile is None or profile.id != profile_id:
                    continue  # erased or merged into another since the page was read
                document = msgspec.to_builtins(profile)
                change = update_membership(document, evaluated, remove=removed, names=names)
                if not change:
                    continue
                changed.append(msgspec.structs.replace(profile, segments=document["segments"]))
                events += membership_events(tenant, profile_id, change, now)
                job.entered += len(change.entered)
                job.left += len(change.left)
            if changed:
                await self._visitors.commit(
                    self._writer, ChangeSet(events=events, profiles=changed), held=held
                )
        job.processed += len(profile_ids)
        job.changed += len(changed)
        job.total = max(job.total, job.processed)


def _plan(
    job: Job, segments: TenantSegments, name: str | None
) -> tuple[builtins.list[LiveSegment], frozenset[str], dict[str, str]]:
    """Which segments to evaluate, which ids to take off, and the names of those ids."""
    names = dict(segments.names)
    if job.segment_id is None:
        return list(segments.live), segments.disabled, names
    if name is not None:
        names.setdefault(job.segment_id, name)
    found = segments.find(job.segment_id)
    if found is not None:
        return [found], frozenset(), names
    # Disabled or deleted: out of every profile.
    return [], frozenset({job.segment_id}), names
