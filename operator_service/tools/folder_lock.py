"""One owner per data folder: an exclusive lock that `operator-service run` takes first.

The lock is an flock on LOCK_FILE inside the folder, and the file names the launcher's
PID. The launcher hands the locked descriptor to every process it starts (Postgres and
its backends, gunicorn and its workers, the engine), so the folder stays locked while any
of them lives: a launcher killed with SIGKILL frees it only once the processes it started
(which get a signal when it dies) have stopped too. The kernel drops the lock with the
last descriptor, so a crash never leaves a stale lock behind.

A second launcher finds the lock taken. If the PID in the file is alive, it stops at
once, naming it; if that launcher is gone, the lock is held by its children on their way
out, and the new one waits for them for a while.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = "launcher.lock"
LEFTOVER_WAIT_SECONDS = 60.0


class FolderBusy(Exception):
    """Another launcher (or what it started) owns the data folder."""


class FolderLock:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, notice: Callable[[str], None], wait_seconds: float = LEFTOVER_WAIT_SECONDS) -> None:
        """Take the lock, or raise FolderBusy naming the holder; `notice` hears about any wait."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd):
                self._wait_for_leftovers(fd, notice, wait_seconds)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _wait_for_leftovers(self, fd: int, notice: Callable[[str], None], wait_seconds: float) -> None:
        holder = _holder(fd)
        if holder is None or _alive(holder):
            named = f"operator-service run (PID {holder})" if holder else "another operator-service run"
            raise FolderBusy(
                f"data folder {self.folder} is in use by {named}; stop it first,"
                " or give this one another OPERATOR_DATA_DIR"
            )
        notice(
            f"the launcher that last used {self.folder} (PID {holder}) is gone; waiting up to"
            f" {wait_seconds:g} s for the processes it started to stop"
        )
        deadline = time.monotonic() + wait_seconds
        while not _try_lock(fd):
            if time.monotonic() > deadline:
                raise FolderBusy(
                    f"data folder {self.folder} is still locked by processes the launcher with"
                    f" PID {holder} started (they hold {self.path} open); stop them first"
                )
            time.sleep(0.2)

    def release(self) -> None:
        """Close our descriptor; the lock ends when the processes given it have ended too."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def live_owner(folder: Path) -> int | None:
    """The PID of the launcher that locked `folder` last, if it still runs; None otherwise.
    Reads the lock file only, so it never gets in the way of a launcher taking the lock."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = _holder(fd)
    finally:
        os.close(fd)
    return holder if holder is not None and _alive(holder) else None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
