"""Helpers for the processes we start and the blocking calls we make at start-up.

`dies_with_parent` ties a child's life to its starter: when the starter ends, even by
SIGKILL, the kernel sends the child a signal (Linux's parent-death signal), so nothing
we start is left running on its own. The kernel counts the *thread* that started the
child as its parent: start such children from a thread that lives as long as they
should (the main thread, in practice).

`interruptible` runs a blocking call (a database connection, a migration) in a helper
thread, so that Ctrl-C reaches the caller at once instead of when the call returns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def dies_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen: the child gets `signum` when its starter ends.

    None where the system has no parent-death signal (the child then simply outlives a
    killed parent, as any process does). Set after Popen's `user=` switch: a change of
    user clears it.
    """
    if _prctl is None:
        return None
    parent = os.getpid()

    def arrange() -> None:
        _prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum))
        if os.getppid() != parent:  # the parent ended before the signal was armed
            os.kill(os.getpid(), signum)

    return arrange


def interruptible(call: Callable[[], T], poll_seconds: float = 0.1) -> T:
    """Run `call` in a daemon thread and wait for it in a way Ctrl-C interrupts.

    On KeyboardInterrupt the call is abandoned (its thread dies with the process).
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="interruptible-call", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_seconds)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
