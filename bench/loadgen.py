"""wrk: installed if missing (Debian package `wrk`), run with bench/replay.lua, output parsed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "replay.lua"


class WrkMissing(RuntimeError):
    pass


def ensure_wrk(log) -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkMissing(
            "wrk is not installed. Install the Debian package: sudo apt-get install -y wrk"
            " (or build it from source and put it on PATH), then run the benchmark again."
        )
    log("wrk is not installed: apt-get update && apt-get install -y wrk")
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "wrk"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get install wrk succeeded but wrk is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    wrapped: int
    sent: int
    codes: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    grid_us: list = field(default_factory=list)  # the latency at every 0.1 % of the requests

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def answered_within(self, milliseconds: float) -> float | None:
        """The fraction of the requests sent that were answered within `milliseconds`: a request
        still unanswered when wrk stopped, or timed out, counts as not answered in time."""
        if not self.sent or not self.grid_us:
            return None if not self.sent else 0.0
        fast = sum(1 for value in self.grid_us if value <= milliseconds * 1000) / len(self.grid_us)
        return min(1.0, fast * self.requests / self.sent)


def run_wrk(
    wrk: str,
    url: str,
    requests_file: Path,
    threads: int,
    connections: int,
    seconds: float,
    timeout_s: int = 5,
    keep_alive: bool = False,
) -> WrkResult:
    command = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{timeout_s}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(requests_file),
        str(threads),
        "keepalive" if keep_alive else "close",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    line = next((text for text in result.stdout.splitlines() if text.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    data = json.loads(line[len("BENCH_JSON ") :])
    errors = {key: data[key] for key in ("connect", "read", "write", "timeout", "status")}
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        # Lua counts every answer outside 2xx; wrk's own count (status >= 400) as a floor.
        non2xx=max(data["non2xx"], data["status"]),
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        wrapped=data["wrapped"],
        sent=data["sent"],
        codes=data["codes"],
        errors=errors,
        grid_us=data["grid_us"],
    )


def merge(results: list[WrkResult]) -> WrkResult:
    """One result for several runs (the slices of a scenario): the totals, and the
    percentiles of all their requests together (each run's latency grid weighted by its
    number of requests)."""
    points = sorted((value, r.requests / len(r.grid_us)) for r in results if r.grid_us for value in r.grid_us)
    reached = list(accumulate(weight for _, weight in points))

    def percentile(q: float) -> float:
        if not points:
            return 0.0
        index = bisect_left(reached, q / 100 * reached[-1] * (1 - 1e-9))
        return points[min(index, len(points) - 1)][0]

    def summed(name: str) -> dict:
        merged: dict = {}
        for result in results:
            for key, count in getattr(result, name).items():
                merged[key] = merged.get(key, 0) + count
        return merged

    return WrkResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        p50_ms=percentile(50) / 1000,
        p90_ms=percentile(90) / 1000,
        p99_ms=percentile(99) / 1000,
        max_ms=max((r.max_ms for r in results), default=0.0),
        non2xx=sum(r.non2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        wrapped=sum(r.wrapped for r in results),
        sent=sum(r.sent for r in results),
        codes=summed("codes"),
        errors=summed("errors"),
        grid_us=[percentile(k / 10) for k in range(1, 1001)],
    )
