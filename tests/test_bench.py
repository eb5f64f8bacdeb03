"""The benchmarks' arithmetic: slices merged into one scenario's figures (bench/loadgen.py, bench/cpu.py),
the halves of a scenario and the CPU of servers measured side by side (bench/runner.py), and the
sandbox's cost per job (bench/engine.py)."""

from __future__ import annotations

import pytest

from bench.cpu import CpuUse
from bench.engine import Timings, report
from bench.loadgen import WrkResult, merge
from bench.runner import REFERENCE, SERVICE, _own_share, slice_halves


def _run(requests: int, seconds: float, latencies_us: list[float], **counts) -> WrkResult:
    """A wrk run whose latency at every 0.1 % of its requests is `latencies_us` (1000 values)."""
    return WrkResult(
        requests=requests,
        seconds=seconds,
        p50_ms=0.0,
        p90_ms=0.0,
        p99_ms=0.0,
        max_ms=max(latencies_us) / 1000,
        non2xx=counts.get("non2xx", 0),
        socket_errors=0,
        wrapped=0,
        sent=requests,
        codes=counts.get("codes", {}),
        grid_us=latencies_us,
    )


def test_merged_percentiles_weigh_each_slice_by_its_requests():
    fast = _run(100, 1.0, [float(k) for k in range(1, 1001)])  # 1..1000 us
    slow = _run(300, 1.0, [float(1000 + k) for k in range(1, 1001)])  # 1001..2000 us
    merged = merge([fast, slow])
    # A quarter of the requests are fast; the median is a third of the way into the slow run
    # (its 334th grid point, 1334 us), the 99th percentile 98.7 % of the way (1987 us).
    assert merged.p50_ms == 1.334
    assert merged.p99_ms == 1.987
    assert merged.max_ms == 2.0
    assert merged.requests == 400 and merged.rps == 200.0


def test_merge_of_one_run_keeps_its_percentiles():
    only = _run(50, 2.0, [float(k) for k in range(1, 1001)])
    merged = merge([only])
    assert (merged.p50_ms, merged.p99_ms) == (0.5, 0.99)
    assert merged.grid_us == only.grid_us


def test_merge_adds_failures_and_their_status_codes():
    a = _run(10, 1.0, [1.0] * 1000, non2xx=2, codes={"500": 2})
    b = _run(10, 1.0, [1.0] * 1000, non2xx=3, codes={"500": 1, "401": 2})
    merged = merge([a, b])
    assert merged.non2xx == 5
    assert merged.codes == {"500": 3, "401": 2}


def test_cpu_of_slices_is_weighted_by_their_length():
    short = CpuUse(seconds=1.0, service=1.0, postgres=0.0, wrk=0.2, other=0.0, stolen=0.0)
    long = CpuUse(seconds=3.0, service=2.0, postgres=0.4, wrk=0.2, other=0.1, stolen=0.0)
    combined = CpuUse.combined([short, long])
    assert combined.seconds == 4.0
    assert combined.service == 1.75
    # 7 core-seconds of service CPU and 1.2 of Postgres over 1000 requests.
    assert combined.per_request_ms(1000) == (7.0, 1.2000000000000002)


def test_a_scenarios_slices_come_in_two_halves_one_per_server_started_first():
    assert slice_halves(10) == [5, 5]
    assert slice_halves(5) == [3, 2]
    assert slice_halves(2) == [1, 1]
    assert slice_halves(1) == [1]


def test_a_server_measured_side_by_side_is_charged_its_share_of_postgres_and_not_the_other_server():
    # Both meters see all of Postgres, and each sees the other server as load from outside.
    service = CpuUse(seconds=2.0, service=0.8, postgres=0.4, wrk=0.2, other=0.75, stolen=0.0)
    reference = CpuUse(seconds=2.0, service=0.7, postgres=0.4, wrk=0.2, other=0.85, stolen=0.0)
    uses = {SERVICE: service, REFERENCE: reference}
    own = _own_share(uses, SERVICE, 0.25)
    assert (own.service, own.postgres, own.other) == pytest.approx((0.8, 0.1, 0.05))
    assert _own_share(uses, REFERENCE, 0.75).other == pytest.approx(0.05)


def test_the_engine_benchmark_charges_the_sandbox_the_difference_of_the_medians():
    plain = Timings("plain", to_running=[0.010, 0.020, 0.030], exit_to_finished=[0.010] * 3, whole=[0.1] * 3)
    cheap = Timings("sandboxed", to_running=[0.050, 0.060, 0.070], exit_to_finished=[0.020] * 3, whole=[0.15] * 3)
    assert report(cheap, plain)[-1] == (
        "| the sandbox adds at most 300 ms per job | 40 ms before the algorithm runs"
        " + 10 ms after it exits; 50 ms on the whole job | yes |"
    )
    slow = Timings("sandboxed", to_running=[0.05] * 3, exit_to_finished=[0.02] * 3, whole=[0.45] * 3)
    assert report(slow, plain)[-1].endswith("350 ms on the whole job | NO |")
