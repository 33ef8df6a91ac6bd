"""API processes end with their supervisor, however it ends.

uvicorn's supervisor stops its API processes when it is asked to (SIGTERM, SIGINT), but a
supervisor killed outright (SIGKILL, the out-of-memory killer) would leave them serving on the
socket, unsupervised, until someone finds them. On Linux a process can ask the kernel for a
signal when its parent ends (``prctl(PR_SET_PDEATHSIG)``): each API process asks for SIGTERM,
so it drains and stops like at any other shutdown.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_supervisor() -> None:
    """In a process spawned by multiprocessing: SIGTERM to this process when its parent ends
    (at once if it has ended already). Elsewhere, or off Linux, nothing."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        log.warning("cannot ask to end with the supervisor: %s", os.strerror(error))
        return
    # The supervisor may have ended before the request above: then no signal will come.
    if os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)
