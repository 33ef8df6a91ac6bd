"""The client libraries of the distributed backends are optional (``pip install
'tessera-cdp[elastic]'``, ``[mysql]``, ``[redis]``, ``[kafka]``, ``[pulsar]``, or ``[all]``):
the embedded mode needs none of them, and imports none. A backend's modules are imported only
where the settings choose it, right after ``require(BACKEND)``, which turns a missing library
into one ConfigurationError naming the extra to install instead of an import traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tessera.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Extra:
    name: str  # the pip extra: tessera-cdp[name]
    modules: tuple[str, ...]  # the client libraries it installs, as imported
    chosen_by: str  # the setting that chooses the backend, for the message


ELASTIC = Extra("elastic", ("elasticsearch", "elastic_transport"), "ELASTIC_HOST")
MYSQL = Extra("mysql", ("asyncmy", "alembic"), "MYSQL_HOST")
REDIS = Extra("redis", ("redis", "hiredis"), "REDIS_HOST")
KAFKA = Extra("kafka", ("aiokafka",), "TESSERA_QUEUE=kafka")
PULSAR = Extra("pulsar", ("pulsar",), "TESSERA_QUEUE=pulsar")
EVERY_EXTRA = (ELASTIC, MYSQL, REDIS, KAFKA, PULSAR)


def require(extra: Extra) -> None:
    """Imports the client libraries of ``extra``, or raises a ConfigurationError saying which
    extra to install."""
    for module in extra.modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigurationError(
                f"{extra.chosen_by} needs the {module!r} client library, which is not "
                f"installed: pip install 'tessera-cdp[{extra.name}]'"
            ) from error
