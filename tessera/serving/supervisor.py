"""Several API processes on one listening socket: uvicorn's supervisor, with Tessera's rules.

Why uvicorn's (``uvicorn.supervisors.Multiprocess``, as of uvicorn 0.55) rather than one of our
own: it binds the socket once and hands that same socket to every process, so the kernel's
queue of accepted connections is shared and a process that stops accepting leaves its share to
the others (with a socket per process, SO_REUSEPORT, the connections queued on a closing
socket are reset); it restarts a process that dies; and on SIGHUP it replaces the processes one
at a time, starting each replacement and waiting until it serves before it stops the old one
with SIGTERM (uvicorn's graceful shutdown, plus ``draining.py``). What this adds:

- SIGTERM and SIGINT stop the supervisor at once, also in the middle of a SIGHUP restart
  (uvicorn's would finish replacing every process first);
- the first process starts alone, then the others; they must all start, or the command ends
  with an error instead of starting them again and again;
- a line on the console for each of these steps.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

from rich.console import Console
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from tessera.serving.config import ServerConfig


class Supervisor(Multiprocess):
    def __init__(self, config: ServerConfig, sockets: list[socket.socket], console: Console):
        super().__init__(config, sockets)
        self._console = console
        self.failed_to_start = False
        # Acted on from the signal handler, not at the next turn of the loop: a restart in
        # progress checks ``should_exit`` between its steps.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_now)

    def _stop_now(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_queue.append(signum)
        self.should_exit.set()

    def init_processes(self) -> None:
        # The first process starts alone: a fresh installation's first start creates what is
        # missing (schema, admin, development source: look-then-create steps), which the others
        # then find instead of creating it twice.
        for index in range(self.processes_num):
            process = Process(self.config, self.sockets)
            process.start()
            self.processes.append(process)
            if index == 0 and not self._started(process):
                return
        for process in self.processes[1:]:
            if not self._started(process):
                return
        count = len(self.processes)
        self._console.print(f"[green]{count} API processes[/] serving: {self._pids()}")

    def _started(self, process: Process) -> bool:
        """Waits until ``process`` serves; False (and the supervisor stops) when it ended or
        took too long."""
        if process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
            return True
        if not self.should_exit.is_set():
            self.failed_to_start = True
            self.should_exit.set()
        return False

    def handle_hup(self) -> None:
        before = {process.pid for process in self.processes}
        self._console.print(f"SIGHUP: replacing the API processes one at a time ({self._pids()})")
        self.restart_all()
        if self.should_exit.is_set():
            return
        kept = before & {process.pid for process in self.processes}
        if kept:
            # restart_all stops at the first replacement that did not start in time.
            self._console.print(
                f"[yellow]Restart stopped:[/] a new API process did not start within "
                f"{self.config.timeout_worker_healthcheck} s; {len(kept)} old one(s) keep serving"
            )
        else:
            self._console.print(f"[green]API processes replaced[/]: {self._pids()}")

    def terminate_all(self) -> None:
        self._console.print("Stopping: the API processes finish their requests and end")
        super().terminate_all()

    def _pids(self) -> str:
        return ", ".join(str(process.pid) for process in self.processes)
