"""Where the CPU went during a measurement: the server's processes, Postgres, wrk, and the rest.

A benchmark on a shared 2-core machine is only as good as its quiet: `CpuMeter` reads
/proc before and after a run and tells how many cores the service (gunicorn master and
workers), Postgres (postmaster and backends) and wrk used, and how much other processes
took meanwhile. The report shows the latter, so a disturbed run is visible as such.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far by it and its reaped children)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # utime + stime, and cutime + cstime: what its exited children used (a Postgres
        # backend that lived for one connection is reaped by the postmaster).
        used = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        found[int(entry)] = (int(fields[1]), used / TICK)
    return found


def _tree_cpu(processes: dict[int, tuple[int, float]], roots: Iterable[int]) -> dict[int, float]:
    members = {root for root in roots if root in processes}
    grown = True
    while grown:
        grown = False
        for pid, (parent, _) in processes.items():
            if parent in members and pid not in members:
                members.add(pid)
                grown = True
    return {pid: processes[pid][1] for pid in members}


def _machine_busy() -> tuple[float, float, float]:
    """(busy, stolen, total) CPU seconds of the whole machine since boot.

    Stolen time is when the hypervisor ran someone else on our virtual CPUs.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return busy / TICK, values[7] / TICK, total / TICK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuUse:
    seconds: float
    service: float  # cores used by the server under test
    postgres: float
    wrk: float  # the load generator (and anything else this process ran)
    other: float  # cores used by processes that are not part of the benchmark (and the kernel)
    stolen: float  # cores the hypervisor gave to other machines

    @classmethod
    def combined(cls, uses: list[CpuUse]) -> CpuUse:
        """The use over several measured runs (the slices of a scenario), weighted by their length."""
        seconds = sum(use.seconds for use in uses) or 1e-9

        def cores(name: str) -> float:
            return sum(getattr(use, name) * use.seconds for use in uses) / seconds

        return cls(seconds, cores("service"), cores("postgres"), cores("wrk"), cores("other"), cores("stolen"))

    def per_request_ms(self, requests: int) -> tuple[float, float]:
        """CPU milliseconds per request in the server and in Postgres."""
        if not requests:
            return 0.0, 0.0
        return self.service * self.seconds * 1000 / requests, self.postgres * self.seconds * 1000 / requests


class CpuMeter:
    """Measures one run: `start()` before, `stop()` after (wrk must have been reaped by then)."""

    def __init__(self, service_pid: int, postgres_pid: int | None):
        self.roots = {"service": service_pid, "postgres": postgres_pid}

    def _sample(self):
        processes = _processes()
        trees = {name: _tree_cpu(processes, [pid]) if pid else {} for name, pid in self.roots.items()}
        return trees, _children_cpu(), _self_cpu(), _machine_busy()

    def start(self) -> CpuMeter:
        self._before = self._sample()
        return self

    def stop(self) -> CpuUse:
        (trees0, children0, self0, (busy0, stolen0, total0)) = self._before
        trees1, children1, self1, (busy1, stolen1, total1) = self._sample()
        cores = os.cpu_count() or 1
        seconds = (total1 - total0) / cores or 1e-9

        def grew(name: str) -> float:
            return sum(value - trees0[name].get(pid, 0.0) for pid, value in trees1[name].items())

        service, postgres = grew("service"), grew("postgres")
        ours_outside = (children1 - children0) + (self1 - self0)
        other = max(0.0, (busy1 - busy0) - service - postgres - ours_outside)
        return CpuUse(
            seconds,
            service / seconds,
            postgres / seconds,
            ours_outside / seconds,
            other / seconds,
            (stolen1 - stolen0) / seconds,
        )


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
