"""Children that do not outlive their parent: ``PR_SET_PDEATHSIG`` through ctypes.

A parent stopped by SIGTERM, SIGINT or a terminal's SIGHUP stops its children itself; one that is
SIGKILLed cannot, so each child asks the kernel for a SIGTERM when its parent dies (Linux). The
signal follows the parent *thread* that forked the child: parents here fork from their main
thread. A parent that died before the request took effect is caught by comparing ``getppid``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Callable

__all__ = ["die_with_parent", "preexec_die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have the kernel send ``signum`` to this process when ``parent`` exits; exit at once if it
    already has. A no-op where prctl is not available (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return
    if prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)  # the parent is gone already: nobody would ever stop us


def preexec_die_with_parent() -> Callable[[], None]:
    """A ``subprocess.Popen(preexec_fn=...)`` that ties the child to the calling process."""
    return functools.partial(die_with_parent, os.getpid())
