"""One cgroup per job: its memory, processes and CPUs are limited together, and it can be killed whole.

A limit on a process (an rlimit) is multiplied by every process the algorithm starts; a
cgroup's limit is for the job. Each job gets `operator-engine/<engine>/<jobId>` in every
hierarchy it needs, on cgroup v2 (one unified hierarchy) or v1 (one per controller), where
<engine> names one engine's namespace and work folder (two engines on one machine never
touch each other's jobs, even for the same namespace against different databases):

- memory: ramGB for everything the job's processes use, swap included; the kernel's OOM
  killer stops the job, not the machine;
- pids: at most MAX_PROCESSES processes and threads at once (no fork bomb);
- cpuset: nCPU processors, which a process of the job cannot widen with sched_setaffinity;
- freezer (v1) / cgroup.freeze and cgroup.kill (v2): stop every process of the job at once,
  so that nothing escapes a kill by forking, however it detached itself.

The engine writes the algorithm's first process into the job's cgroups before it runs
anything (see sandbox.py); every process it starts inherits them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENGINE_GROUP = "operator-engine"
V1_CONTROLLERS = ("memory", "pids", "cpuset", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpuset")
KILL_WAIT_SECONDS = 10.0
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class CgroupError(Exception):
    """A cgroup could not be made, limited or emptied."""


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int
    max_processes: int
    cpus: list[int]


@dataclass(frozen=True)
class Cgroups:
    """Where this engine makes its jobs' cgroups: one folder per controller (v1) or one (v2)."""

    version: int
    folders: dict[str, Path]
    controllers: frozenset[str]

    def describe(self, controller: str) -> str | None:
        """ "cgroup v1 memory" and the like, or None when that controller is not available."""
        return f"cgroup v{self.version} {controller}" if controller in self.controllers else None

    def job(self, job_id: str) -> JobCgroup:
        return JobCgroup(self, {name: folder / _safe(job_id) for name, folder in self.folders.items()})

    def leftovers(self) -> list[JobCgroup]:
        """Job cgroups an earlier run of this engine left behind (it was killed, say)."""
        names: set[str] = set()
        for folder in self.folders.values():
            if folder.is_dir():
                names.update(child.name for child in folder.iterdir() if child.is_dir())
        return [self.job(name) for name in sorted(names)]

    def remove_if_empty(self) -> None:
        """Remove this engine's folders when no job's cgroup is left in them (at engine stop)."""
        for folder in self.folders.values():
            try:
                folder.rmdir()
            except OSError:
                pass


class JobCgroup:
    def __init__(self, tree: Cgroups, folders: dict[str, Path]):
        self.tree = tree
        self.folders = folders

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid to in order to join every cgroup of the job."""
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def create(self, limits: CgroupLimits) -> None:
        try:
            for folder in self.folders.values():
                folder.mkdir(exist_ok=True)
            if self.tree.version == 2:
                self._limit_v2(self.folders["unified"], limits)
            else:
                self._limit_v1(limits)
        except OSError as exc:
            raise CgroupError(f"cannot set up the job's cgroup: {exc}") from None

    def _limit_v1(self, limits: CgroupLimits) -> None:
        memory = self.folders.get("memory")
        if memory is not None:
            _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
        if "pids" in self.folders:
            _write(self.folders["pids"] / "pids.max", limits.max_processes)
        cpuset = self.folders.get("cpuset")
        if cpuset is not None:
            _write(cpuset / "cpuset.cpus", _cpu_list(limits.cpus))
            _write(cpuset / "cpuset.mems", (cpuset.parent / "cpuset.mems").read_text().strip())

    def _limit_v2(self, folder: Path, limits: CgroupLimits) -> None:
        enabled = self.tree.controllers
        if "memory" in enabled:
            _write(folder / "memory.max", limits.memory_bytes)
            if (folder / "memory.swap.max").exists():
                _write(folder / "memory.swap.max", 0)
        if "pids" in enabled:
            _write(folder / "pids.max", limits.max_processes)
        if "cpuset" in enabled:
            _write(folder / "cpuset.cpus", _cpu_list(limits.cpus))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders.values():
            try:
                found.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return found

    def oom_kills(self) -> int:
        """How many times the kernel killed a process of the job for using more than its memory."""
        for folder, name in (
            (self.folders.get("memory"), "memory.oom_control"),
            (self.folders.get("unified"), "memory.events"),
        ):
            if folder is None:
                continue
            try:
                text = (folder / name).read_text()
            except OSError:
                continue
            match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
            if match:
                return int(match.group(1))
        return 0

    def kill_all(self) -> None:
        """Kill every process of the job; return once none is left. CgroupError if one survives."""
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self.pids():
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {sorted(self.pids())} of the job survived SIGKILL")
            if not self._kill_by_kernel():
                with self._frozen():
                    for pid in self.pids():
                        _kill(pid)
            time.sleep(0.02)

    def _kill_by_kernel(self) -> bool:
        """cgroup v2's cgroup.kill: the kernel kills the whole group, new forks included."""
        unified = self.folders.get("unified")
        if unified is None or not (unified / "cgroup.kill").exists():
            return False
        _write(unified / "cgroup.kill", 1)
        return True

    def _frozen(self) -> _Freeze:
        return _Freeze(self.folders.get("freezer"), self.folders.get("unified"))

    def remove(self) -> None:
        """Kill what is left and remove the job's cgroups."""
        self.kill_all()
        for folder in self.folders.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                raise CgroupError(f"cannot remove {folder}")


class _Freeze:
    """While frozen, no process of the group runs, so none can fork away from a kill."""

    def __init__(self, v1_freezer: Path | None, v2_group: Path | None):
        self.file: Path | None
        if v1_freezer is not None:
            self.file, self.on, self.off = v1_freezer / "freezer.state", "FROZEN", "THAWED"
        elif v2_group is not None and (v2_group / "cgroup.freeze").exists():
            self.file, self.on, self.off = v2_group / "cgroup.freeze", "1", "0"
        else:
            self.file = None

    def __enter__(self) -> None:
        if self.file is None:
            return
        _write(self.file, self.on)
        deadline = time.monotonic() + 2.0
        while self.file.name == "freezer.state" and self.file.read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            _write(self.file, self.off)


def detect(engine: str) -> tuple[Cgroups | None, str]:
    """The cgroups this engine (root) can make for its jobs under `engine`, and why not when it cannot."""
    if os.geteuid() != 0:
        return None, "the engine does not run as root"
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return _prepare_v2(engine), ""
        if (CGROUP_ROOT / "memory").is_dir() or (CGROUP_ROOT / "pids").is_dir():
            return _prepare_v1(engine), ""
    except OSError as exc:
        return None, f"the cgroup file system is not writable ({exc})"
    return None, f"no cgroup controllers under {CGROUP_ROOT}"


def _prepare_v1(engine: str) -> Cgroups:
    folders: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        hierarchy = CGROUP_ROOT / controller
        if not hierarchy.is_dir():
            continue
        folder = hierarchy
        for name in (ENGINE_GROUP, _safe(engine)):
            folder = folder / name
            folder.mkdir(exist_ok=True)
            if controller == "cpuset":
                for setting in ("cpuset.cpus", "cpuset.mems"):
                    if not (folder / setting).read_text().strip():
                        _write(folder / setting, (folder.parent / setting).read_text().strip())
            if controller == "memory" and (folder / "memory.use_hierarchy").exists():
                _try_write(folder / "memory.use_hierarchy", 1)
        folders[controller] = folder
    return Cgroups(1, folders, frozenset(folders))


def _prepare_v2(engine: str) -> Cgroups:
    folder = CGROUP_ROOT
    for name in (ENGINE_GROUP, _safe(engine)):
        available = set((folder / "cgroup.controllers").read_text().split())
        wanted = [controller for controller in V2_CONTROLLERS if controller in available]
        _try_write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        folder = folder / name
        folder.mkdir(exist_ok=True)
    available = set((folder / "cgroup.controllers").read_text().split())
    _try_write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in V2_CONTROLLERS if c in available))
    enabled = set((folder / "cgroup.subtree_control").read_text().split())
    return Cgroups(2, {"unified": folder}, frozenset(enabled & set(V2_CONTROLLERS)))


def cpus_for(slot: int, count: int, available: Iterable[int]) -> list[int]:
    """`count` processors for the job in `slot`, spread over `available` so jobs share them evenly."""
    processors = sorted(available)
    count = min(count, len(processors))
    start = (slot * count) % len(processors)
    return sorted(processors[(start + offset) % len(processors)] for offset in range(count))


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)


def _safe(name: str) -> str:
    return _NAME.sub("_", name)[:200] or "_"


def _write(path: Path, value: object) -> None:
    with open(path, "w") as handle:
        handle.write(str(value))


def _try_write(path: Path, value: object) -> None:
    try:
        _write(path, value)
    except OSError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
