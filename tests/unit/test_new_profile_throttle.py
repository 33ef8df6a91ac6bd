"""Who the new-visitor throttle charges, told without reading anything: a public request that
names no profile id Tessera issued, from an address that is its client's own."""

from __future__ import annotations

import pytest

from tessera.core.throttle import InProcessBuckets, Throttle
from tessera.errors import TooManyRequests
from tessera.identity.profile_ids import ProfileIds
from tessera.model.common import DEFAULT_TENANT, utcnow
from tessera.model.source import EventSource
from tessera.pipeline.new_profiles import NewProfileThrottle
from tessera.pipeline.request import IncomingBatch, IncomingEvent, IngestResult

IDS = ProfileIds(lambda: "unit-test secret")


async def _taken(batch: IncomingBatch) -> IngestResult:
    return IngestResult(batch.profile_id, batch.session_id, [])


def _throttle(*, behind_proxies: bool = False) -> NewProfileThrottle:
    throttle = Throttle("new", 2, "TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE", InProcessBuckets())
    return NewProfileThrottle(_taken, throttle, IDS, behind_proxies=behind_proxies)


def _batch(address: str, *, profile_id: str | None = None, trust: str = "public") -> IncomingBatch:
    source = EventSource(
        id="web",
        tenant=DEFAULT_TENANT,
        name="Web",
        created=utcnow(),
        trust=trust,  # type: ignore[arg-type]
    )
    return IncomingBatch(
        tenant=DEFAULT_TENANT,
        source=source,
        events=[IncomingEvent(type="page-view")],
        profile_id=profile_id,
        client_ip=address,
    )


async def test_new_visitors_from_one_address_are_charged_returning_ones_never() -> None:
    throttle = _throttle()
    for _ in range(2):
        await throttle(_batch("93.184.216.34"))
    with pytest.raises(TooManyRequests):
        await throttle(_batch("93.184.216.34"))
    with pytest.raises(TooManyRequests):  # a made-up id is no proof
        await throttle(_batch("93.184.216.34", profile_id="p-made-up"))
    await throttle(_batch("93.184.216.34", profile_id=IDS.mint()))  # an issued id is
    await throttle(_batch("93.184.216.34", trust="server"))  # a server source proves itself
    await throttle(_batch("151.101.1.69"))  # another address has its own bucket


async def test_a_private_address_is_not_charged_until_trusted_proxies_are_set() -> None:
    exposed, proxied = _throttle(), _throttle(behind_proxies=True)
    for _ in range(5):  # a reverse proxy's address, shared by every visitor behind it
        await exposed(_batch("10.0.0.7"))
    for _ in range(2):
        await proxied(_batch("10.0.0.7"))
    with pytest.raises(TooManyRequests):  # with proxies set, the address is the client's
        await proxied(_batch("10.0.0.7"))
