"""A user id of its own for every running job, so two jobs never share a file or a process.

When the engine runs as root, each job takes a uid from FIRST_UID.. (numbers only: no
account is created) and holds it until it ends. The uid is leased with an exclusive lock
on a file in LEASE_DIR, shared by every engine of the machine, so two engines (of
different environments) never hand out the same uid either; a lock dies with its
process, so a crashed engine leaks nothing. Before a uid is handed out, and again when
its job ends, every process still running as it is killed, and the engine checks from
/proc that none is left.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

FIRST_UID = 1_500_000
UID_COUNT = 1000
LEASE_DIR = Path("/run/operator-engine/uids")
KILL_WAIT_SECONDS = 10.0


class NoFreeUid(Exception):
    """Every uid of the range is leased by a running job."""


class LeftoverProcesses(Exception):
    """Processes of a job's uid survived SIGKILL."""


@dataclass
class UidLease:
    uid: int
    slot: int
    _fd: int

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class UidPool:
    first: int = FIRST_UID
    count: int = UID_COUNT
    lease_dir: Path = LEASE_DIR

    def describe(self) -> str:
        return f"uids {self.first}-{self.first + self.count - 1}"

    def acquire(self) -> UidLease:
        """The first uid no running job holds; its leftover processes (of a crash) are killed first."""
        self.lease_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for slot in range(self.count):
            uid = self.first + slot
            fd = os.open(self.lease_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                kill_processes_of(uid)
            except LeftoverProcesses:
                os.close(fd)
                raise
            return UidLease(uid, slot, fd)
        raise NoFreeUid(f"all {self.count} uids from {self.first} are in use")


def processes_of(uid: int) -> list[int]:
    """Pids of the live processes whose real or effective uid is `uid`, read from /proc.

    A zombie does not count: it is dead already, only its parent's wait() is missing.
    """
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _runs_as(entry.name, uid):
            found.append(int(entry.name))
    return found


def _runs_as(pid: str, uid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("State:", "Uid:")))
    except (OSError, ValueError):
        return False
    if fields.get("State", "Z").split()[0] in ("Z", "X"):
        return False
    real, effective = fields.get("Uid", "-1 -1").split()[:2]
    return uid in (int(real), int(effective))


def kill_processes_of(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left; LeftoverProcesses if some will not die."""
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while pids := processes_of(uid):
        if time.monotonic() > deadline:
            raise LeftoverProcesses(f"processes {pids} of uid {uid} survived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
