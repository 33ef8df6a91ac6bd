"""Session enrichment: pure functions that turn the first request of a session (its context and
headers) into what is stored about the visitor. No I/O, no state but bounded caches."""

from tessera.pipeline.enrich.device import DeviceDetails, DeviceInfo, Software, describe_device
from tessera.pipeline.enrich.session_info import enrich_new_session
from tessera.pipeline.enrich.timezone import local_time, resolve_timezone
from tessera.pipeline.enrich.traffic import ReferrerInfo, TrafficInfo, describe_visit_source

__all__ = [
    "DeviceDetails",
    "DeviceInfo",
    "ReferrerInfo",
    "Software",
    "TrafficInfo",
    "describe_device",
    "describe_visit_source",
    "enrich_new_session",
    "local_time",
    "resolve_timezone",
]
