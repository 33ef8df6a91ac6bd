"""How many API processes `tessera serve` runs, and whether the settings allow more than one.

Several processes are safe only when everything one request shares with another lives outside
the process: the records (Elasticsearch), the configuration (MySQL/MariaDB) and the per-profile
locks, record caches, de-duplication keys and throttle buckets (Redis). The embedded mode keeps
its locks and caches in the process (core/locks.py ``KeyedLocks``, core/cache.py) and
its records behind one SQLite writer thread: two processes there would change one profile at
the same time, each unaware of the other's lock, and read stale copies from their own caches.
So more than one process is refused unless all three servers are configured.
"""

from __future__ import annotations

import os

from tessera.errors import ConfigurationError
from tessera.settings import Settings

# What each server holds that several processes must share, by the variable that sets it.
SHARED_BY_SERVER = {
    "ELASTIC_HOST": "events, sessions and profiles",
    "MYSQL_HOST": "the configuration",
    "REDIS_HOST": "per-profile locks, record caches, de-duplication keys and throttles",
}


def unshared(settings: Settings) -> list[str]:
    """The variables of the servers not configured: what stays inside one process."""
    configured = {
        "ELASTIC_HOST": settings.elastic_host,
        "MYSQL_HOST": settings.mysql_host,
        "REDIS_HOST": settings.redis_host,
    }
    return [variable for variable, value in configured.items() if not value]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a container's cpuset counts, not the
    host's CPUs)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def api_process_count(settings: Settings, requested: int | None = None) -> int:
    """``requested`` (``--workers``), else TESSERA_API_WORKERS, else 1 in the embedded mode
    and the usable CPUs in the distributed one; refused (ConfigurationError) when more than
    one process is asked for and a server that processes must share is not configured."""
    count = requested or settings.api_workers
    if count is None:
        return usable_cpus() if not unshared(settings) else 1
    missing = unshared(settings)
    if count > 1 and missing:
        kept = "; ".join(f"{SHARED_BY_SERVER[variable]} ({variable})" for variable in missing)
        raise ConfigurationError(
            f"TESSERA_API_WORKERS (or --workers) is {count}, but several API processes need "
            f"ELASTIC_HOST, MYSQL_HOST and REDIS_HOST, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: without them, {kept} stay inside "
            "one process, and two processes could change one profile at the same time. Set "
            "them, or run one API process"
        )
    return count
