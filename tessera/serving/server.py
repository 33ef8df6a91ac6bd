"""`tessera serve`'s HTTP server: uvicorn with Tessera's protocol and limits, in this process
or in several (``supervisor.py``)."""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from rich.console import Console

from tessera.errors import ConfigurationError
from tessera.serving.config import ServerConfig
from tessera.serving.draining import DrainingProtocol
from tessera.serving.supervisor import Supervisor
from tessera.serving.worker_app import APP_FACTORY
from tessera.settings import Settings

# How long one new API process may take to become ready (a distributed start creates index
# partitions and waits for their shards) before the first start fails, or a SIGHUP restart
# gives up on it and keeps the process it was to replace.
PROCESS_START_TIMEOUT_S = 120


def server_config(settings: Settings, app: Any, *, workers: int = 1) -> ServerConfig:
    return ServerConfig(
        app,
        header_timeout_s=settings.header_timeout_seconds,
        factory=isinstance(app, str),
        workers=workers,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=DrainingProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_level=settings.logging_level.value.lower(),
        access_log=False,
        server_header=False,
        # The client behind proxies is found by create_app's ForwardedClient, from
        # TESSERA_TRUSTED_PROXIES; uvicorn's own would trust any local peer's header.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        timeout_worker_healthcheck=PROCESS_START_TIMEOUT_S,
    )


def serve_here(settings: Settings, app: Any) -> bool:
    """Serve ``app`` in this process until SIGTERM or SIGINT; False when it did not start."""
    server = uvicorn.Server(server_config(settings, app))
    server.run()
    return server.started


def serve_processes(settings: Settings, count: int, console: Console) -> None:
    """Serve with ``count`` API processes, each building its own application from the
    environment, until SIGTERM or SIGINT; SIGHUP replaces them one at a time."""
    # The processes read the settings from the environment: what the command line changed
    # must be there too.
    os.environ["TESSERA_HOST"] = settings.host
    os.environ["TESSERA_PORT"] = str(settings.port)
    config = server_config(settings, APP_FACTORY, workers=count)
    listening = config.bind_socket()
    supervisor = Supervisor(config, [listening], console)
    console.print(
        f"[bold green]Tessera[/] at http://{settings.host}:{settings.port}: starting {count} API "
        f"processes (supervisor {os.getpid()}; SIGHUP replaces them one at a time, SIGTERM "
        "stops them)"
    )
    try:
        supervisor.run()
    finally:
        listening.close()
    if supervisor.failed_to_start:
        raise ConfigurationError("an API process did not start (its messages are above)")
