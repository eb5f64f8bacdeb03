"""`python -m bench`: the whole benchmark in one command (see bench/README.md).

1. wrk is found (or installed with apt-get when running as root).
2. An embedded Postgres starts in .bench/; per row count, a database is migrated, the
   environment announced, N jobs seeded with one INSERT ... SELECT, then ANALYZEd.
3. The ceiling (bench/ceiling.py, a Flask app that only returns {"ok": true}) runs under the
   same gunicorn settings beside the service; each scenario is measured in slices that
   alternate with slices of the ceiling, and compared with the ceiling of those slices.
   With --baseline, the reference is the service itself under other gunicorn settings
   (today's 2 sync workers, say) instead of the ceiling, so two configurations are
   compared in one run; with --monitoring-cost, the service with its metrics and access
   log turned off (METRICS=0, ACCESS_LOG=0) under the same settings.
4. Each scenario: pre-signed requests (a fresh nonce each) are written to files that
   bench/replay.lua replays with wrk; a short warm-up sizes the measured slices. The
   `idle` and `slowloris` scenarios measure while slow clients (bench/slowclients.py) hold
   connections open to the server being measured.
5. A table (Markdown, to paste into README) and the targets are printed; the exit status
   is 1 if any answer was not 2xx (or a socket error happened), 2 on a setup failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import presign
from bench.cpu import CpuMeter, CpuUse, postmaster_pid
from bench.database import RUNNING, BenchDatabase
from bench.loadgen import WrkMissing, WrkResult, ensure_wrk, merge, run_wrk, wrk_version
from bench.server import REPO, Gunicorn, GunicornSettings
from bench.slowclients import SLOWLORIS_INTERVAL, SlowClients
from operator_service.tools import cli

# --monitoring-cost: the reference turns off what the measured service does per request.
MONITORING_OFF = (("METRICS", "0"), ("ACCESS_LOG", "0"))
MONITORING_LOGS = {"LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "METRICS": "1", "ACCESS_LOG": "1"}
MONITORING_SHARE = 0.95  # the target: with metrics and access log, at least this share of the throughput without

DATA_DIR = REPO / ".bench"
# Each slice starts after this long of unmeasured load on the same server: a server that
# has just been idle while the other one ran answers its first second measurably slower.
SLICE_WARMUP_SECONDS = 1
# Postgres backends report their table statistics within about a second of going idle.
STATS_DELAY_SECONDS = 1.5
API = presign.API
# The slow-client scenarios: connections held open meanwhile, and the answer time that counts.
SLOW_CLIENTS = 32
ANSWER_WITHIN_MS = 1000.0


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    signed: bool
    path: str = ""
    items: int | None = None  # items the probe's answer must hold; None: at least one
    step: str = ""  # a step of bench/ladder.py instead of the service's own GET /compute
    attack: str = ""  # slow clients held open while it is measured (bench/slowclients.py)


SCENARIOS = [
    Scenario("environments", "GET /environments", False, f"{API}/environments?chainId={presign.CHAIN_ID}"),
    Scenario("runningjobs", f"GET /runningjobs ({RUNNING} running)", False, f"{API}/runningjobs", items=RUNNING),
    Scenario("get", "GET /compute, signed (jobId + owner)", True, items=1),
    Scenario("post", "POST /compute, signed (new agreementId)", True, items=1),
    Scenario(
        "idle", f"GET / + signed GET /compute, {SLOW_CLIENTS} idle connections open", True, items=1, attack="idle"
    ),
    Scenario(
        "slowloris",
        f"GET / + signed GET /compute, {SLOW_CLIENTS} connections sending a header byte every {SLOWLORIS_INTERVAL:g} s",
        True,
        items=1,
        attack="slowloris",
    ),
]
# The signed GET cut back step by step (bench/ladder.py), then the real one: not run by default.
LADDER = [
    Scenario("get-route", "GET /compute ladder: route answers [] at once", True, items=0, step="route"),
    Scenario("get-signature", "GET /compute ladder: + signature check", True, items=0, step="signature"),
    Scenario("get-read", "GET /compute ladder: + indexed read, no nonce", True, items=1, step="read"),
]
CEILING = Scenario("ceiling", 'ceiling: Flask {"ok": true}', False, "/")
BY_KEY = {s.key: s for s in SCENARIOS + LADDER}
ALIASES = {"ladder": [s.key for s in LADDER] + ["get"], "edge": ["get", "post", "idle", "slowloris"]}


@dataclass
class Row:
    scenario: str
    title: str
    rows: int | None
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    requests: int
    codes: dict
    app_cpu_ms: float = 0.0
    pg_cpu_ms: float = 0.0
    other_cores: float = 0.0
    stolen_cores: float = 0.0
    of_ceiling: float | None = None  # of the reference: the ceiling, or the baseline with --baseline
    seq_scans: int | None = None  # of jobs and nonces during the measured slices
    within: float | None = None  # requests answered within ANSWER_WITHIN_MS, of those sent
    baseline: bool = False  # a row of the --baseline server


def log(message: str) -> None:
    print(message, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Load benchmark of operator-service (wrk).")
    parser.add_argument(
        "--rows", default="10000,1000000", help="comma-separated row counts to seed (default 10000,1000000)"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured scenario (default 10)")
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="slices of each scenario, alternating with slices of the ceiling (default 5)",
    )
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each scenario (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--workers",
        type=int,
        default=cli.DEFAULT_WORKERS,
        help=f"gunicorn workers (default {cli.DEFAULT_WORKERS}, as the service ships)",
    )
    parser.add_argument(
        "--worker-class",
        default="buffered",
        help="gunicorn worker class: buffered (the service's, the default), sync, gthread, or a class path",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=cli.DEFAULT_THREADS,
        help=f"threads per worker, threaded classes only (default {cli.DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--baseline",
        metavar="CLASS:WORKERS[xTHREADS]",
        help="compare with the service under these gunicorn settings (e.g. sync:2) instead of the ceiling",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="load the service and the reference at the same time, each with its own wrk, instead of in turns",
    )
    parser.add_argument(
        "--monitoring-cost",
        action="store_true",
        help="compare with the service without metrics and access log (METRICS=0, ACCESS_LOG=0), same settings;"
        " both log at INFO in JSON",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated subset of: "
        + ", ".join(s.key for s in SCENARIOS + LADDER)
        + "; ladder = "
        + ",".join(ALIASES["ladder"]),
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse connections (default: every request says Connection: close, as the Provider does)",
    )
    parser.add_argument("--nonce-window", type=int, default=300, help="NONCE_WINDOW of the service (default 300)")
    parser.add_argument("--reseed", action="store_true", help="seed the databases again even if .bench/ has them")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling measurement (fractions not shown)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit 1 also when a target is missed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rows_list = [int(value.replace("_", "")) for value in args.rows.split(",") if value.strip()]
        wanted = [
            key
            for name in args.scenarios.split(",")
            if name.strip()
            for key in ALIASES.get(name.strip(), [name.strip()])
        ]
        unknown = [key for key in wanted if key not in BY_KEY]
        if args.slices < 1:
            raise ValueError("--slices must be at least 1")
        if unknown or not rows_list or min(rows_list) < RUNNING:
            raise ValueError(
                f"unknown scenario(s) {unknown}" if unknown else f"--rows: each count must be >= {RUNNING}"
            )
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    scenarios = [s for s in LADDER + SCENARIOS if s.key in wanted]
    try:
        settings = GunicornSettings.parse(f"{args.worker_class}:{args.workers}x{args.threads}")
        baseline = GunicornSettings.parse(args.baseline) if args.baseline else None
        if args.monitoring_cost:
            if baseline is not None:
                raise ValueError("--monitoring-cost and --baseline each choose the reference: give one")
            baseline = replace(settings, env=MONITORING_OFF)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.connections < args.wrk_threads:
        args.wrk_threads = args.connections
    try:
        wrk = ensure_wrk(log)
    except (WrkMissing, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    bench = Bench(args, settings, wrk, baseline)
    try:
        results = bench.run(rows_list, scenarios)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        bench.close()
    return report(results, args, settings, wrk, rows_list, baseline)


class Bench:
    def __init__(
        self, args: argparse.Namespace, settings: GunicornSettings, wrk: str, baseline: GunicornSettings | None = None
    ):
        self.args = args
        self.settings = settings
        self.baseline = baseline
        self.wrk = wrk
        self.db = BenchDatabase(DATA_DIR)
        self.signer = presign.Signer()
        self.rng = random.Random(5)
        self.servers: list[Gunicorn] = []
        self.started_db = False
        self.ceiling_rps: float | None = None

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        if self.started_db:
            self.db.stop()

    def run(self, rows_list: list[int], scenarios: list[Scenario]) -> list[Row]:
        reference = f"the service under {self.baseline.describe()}" if self.baseline else "the ceiling"
        log(
            f"bench: gunicorn {self.settings.describe()}, wrk {self.args.wrk_threads} threads x "
            f"{self.args.connections} connections, {self.args.slices} x {slice_seconds(self.args)} s per scenario,"
            f" {'at the same time as' if self.args.side_by_side else 'alternating with'}"
            f" {reference} (+{self.args.warmup:g} s warm-up)"
        )
        log("starting embedded Postgres in .bench/postgres")
        self.db.start()
        self.started_db = True
        results: list[Row] = []
        for rows in rows_list:
            log(f"rows = {rows}")
            name = self.db.prepare(rows, self.args.reseed, log)
            results += self._block(rows, name, scenarios)
        return results

    def _block(self, rows: int, name: str, scenarios: list[Scenario]) -> list[Row]:
        """The scenarios on one database, each measured in slices that alternate with the ceiling.

        A shared machine's speed drifts by 10-40 % within a minute, so each scenario is
        compared with the ceiling measured between its own slices (C S C S ... S C), not with
        one measured minutes away.
        """
        results: list[Row] = []
        if self.baseline:
            ceiling = self._serve("operator_service.run:app", self._service_env(name), self.baseline)
        else:
            ceiling = None if self.args.no_ceiling else self._serve("bench.ceiling:app", {})
        server = self._serve("operator_service.run:app", self._service_env(name))
        try:
            if ceiling is not None and not self.baseline:
                self._probe(ceiling, CEILING, rows)
                self._warm_up(ceiling, CEILING, rows)
            for scenario in scenarios:
                if scenario.key == "runningjobs":
                    running = self.db.running_count(name)
                    if running != RUNNING:
                        log(f"  warning: {running} running jobs instead of {RUNNING}")
                if scenario.step:
                    results += self._measure_step(scenario, rows, name, ceiling)
                else:
                    measure = self._measure_side_by_side if self.args.side_by_side else self._measure
                    results += measure(server, scenario, rows, name, ceiling)
                if scenario.key == "post":
                    self.db.after_post(name)
        finally:
            server.stop()
            if ceiling is not None:
                ceiling.stop()
        return results

    def _measure_step(self, scenario: Scenario, rows: int, database: str, ceiling: Gunicorn | None) -> list[Row]:
        """A ladder step, served by its own gunicorn (bench/ladder.py) under the same settings."""
        env = {**self._service_env(database), "BENCH_LADDER_STEP": scenario.step}
        server = self._serve("bench.ladder:app", env)
        try:
            return self._measure(server, scenario, rows, database, ceiling)
        finally:
            server.stop()

    def _service_env(self, database: str) -> dict[str, str]:
        return {
            **self.db.env(database),
            "KUBERNETES": "off",
            "ALLOWED_ADMINS": '["bench-admin-secret"]',
            "SIGNATURE_REQUIRED": "1",
            "ALLOWED_PROVIDERS": json.dumps([self.signer.address]),
            "NONCE_WINDOW": str(self.args.nonce_window),
            "DB_POOL_SIZE": str(max(4, self.settings.threads)),
            "RESULTS_DIR": str(DATA_DIR / "results"),
            # With --monitoring-cost, both servers log at INFO as a production one does, where
            # only the measured one writes an access line per request.
            **(MONITORING_LOGS if self.args.monitoring_cost else {"LOG_LEVEL": "WARNING"}),
        }

    def _serve(self, app: str, env: dict[str, str], settings: GunicornSettings | None = None) -> Gunicorn:
        settings = settings or self.settings
        suffix = "-baseline" if settings is not self.settings else ""
        server = Gunicorn(app, settings, env, DATA_DIR / "logs" / f"{app.split(':')[0]}{suffix}.log")
        self.servers.append(server)
        return server.start()

    # -- one scenario -------------------------------------------------------------------

    def _lines(self, scenario: Scenario, rows: int | None, count: int) -> list[str]:
        if scenario.attack:
            return self._mixed_lines(rows, count)
        if scenario.key == "get" or scenario.step:
            return presign.status_requests(self.signer, rows, count, self.rng)
        if scenario.key == "post":
            return presign.start_requests(self.signer, count, self.rng)
        return presign.plain_requests(scenario.path)

    def _mixed_lines(self, rows: int | None, count: int) -> list[str]:
        """Signed GET /compute and GET / in turn for every wrk thread (thread k of T replays lines
        k, k+T, ...: the kinds alternate in runs of T lines), the signed one first."""
        signed = iter(presign.status_requests(self.signer, rows, (count + 1) // 2, self.rng))
        plain = presign.plain_requests("/")[0]
        threads = self.args.wrk_threads
        return [next(signed, plain) if (i // threads) % 2 == 0 else plain for i in range(count)]

    def _file(self, scenario: Scenario, rows: int | None, count: int, phase: str) -> Path:
        started = time.monotonic()
        lines = self._lines(scenario, rows, count)
        path = presign.write_lines(DATA_DIR / "requests" / f"{scenario.key}-{rows or 0}-{phase}.txt", lines)
        if scenario.signed:
            log(f"    signed {len(lines)} requests in {time.monotonic() - started:.1f} s")
        return path

    def _probe(self, server: Gunicorn, scenario: Scenario, rows: int | None) -> None:
        """One request sent before the load, so a broken scenario says why at once."""
        line = self._lines(scenario, rows, 1)[0]
        method, target, *body = line.split("\t")
        request = urllib.request.Request(
            server.url + target,
            method=method,
            data=body[0].encode() if body else None,
            headers={"Content-Type": "application/json"} if body else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:300]
            raise RuntimeError(f"{scenario.title}: probe answered {exc.code}: {text}\n{server.log_tail()}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"{scenario.title}: probe failed: {exc}\n{server.log_tail()}") from None
        # The answers must carry what the scenario claims to measure, not an empty list.
        if scenario is CEILING:
            return
        found = json.loads(body)
        expected = scenario.items
        if not isinstance(found, list) or (not found if expected is None else len(found) != expected):
            raise RuntimeError(
                f"{scenario.title}: probe answered {str(found)[:200]!r},"
                f" expected {'some' if expected is None else expected} item(s)"
            )

    def _wrk(self, server: Gunicorn, path: Path, seconds: float) -> WrkResult:
        return run_wrk(
            self.wrk,
            server.url,
            path,
            self.args.wrk_threads,
            self.args.connections,
            seconds,
            keep_alive=self.args.keep_alive,
        )

    def _wrk_under(self, server: Gunicorn, scenario: Scenario, path: Path, seconds: float) -> WrkResult:
        """A wrk run, with the scenario's slow clients holding connections to the same server meanwhile."""
        if not scenario.attack:
            return self._wrk(server, path, seconds)
        with SlowClients(server.port, scenario.attack, SLOW_CLIENTS):
            return self._wrk(server, path, seconds)

    def _warm_up(self, server: Gunicorn, scenario: Scenario, rows: int | None) -> float:
        """An unmeasured run; its rate (requests/s) sizes the measured slices' request files."""
        expected = self.ceiling_rps or 8000.0
        if self.args.warmup <= 0:
            return expected
        count = requests_for(expected, self.args.warmup)
        warm = self._wrk(server, self._file(scenario, rows, count, "warmup"), self.args.warmup)
        return max(warm.rps, 50.0)

    def _slice(self, server: Gunicorn, scenario: Scenario, rows: int | None, path: Path, warm: Path) -> Slice:
        """One measured wrk run after an unmeasured second on `warm`; run again with more
        requests if a thread ran out of them."""
        self._wrk(server, warm, SLICE_WARMUP_SECONDS)
        for _ in range(3):
            meter = CpuMeter(server.process.pid, postmaster_pid(self.db.server.data_dir)).start()
            result = self._wrk_under(server, scenario, path, slice_seconds(self.args))
            cpu = meter.stop()
            if not (scenario.signed and result.wrapped):
                return Slice(result, cpu)
            # Ran out of pre-signed requests: the replays failed. Size by what was sent, again.
            log(f"    ran out of pre-signed requests ({result.sent}); this slice again with more")
            path = self._file(scenario, rows, math.ceil(result.sent * 1.6) + 1000, "again")
        raise RuntimeError(f"{scenario.title}: ran out of pre-signed requests three times")

    def _measure(
        self, server: Gunicorn, scenario: Scenario, rows: int | None, database: str | None, ceiling: Gunicorn | None
    ) -> list[Row]:
        """The scenario's row and, unless --no-ceiling, the reference's (the ceiling, or the
        service under the --baseline settings), measured in alternating slices.

        With a reference, the slices come in two halves, one with each server started first
        (the older one is restarted between them): of two identical servers, the one started
        second measured 5-8 % slower in every run on this machine, whatever it served. The
        scenario's share of the reference is the geometric mean of the two halves' shares.
        """
        log(f"  {scenario.title}")
        sizes = self._request_counts(server, scenario, rows)
        reference_scenario = scenario if self.baseline else CEILING
        halves = slice_halves(self.args.slices) if ceiling is not None else [self.args.slices]
        servers = {SERVICE: server, REFERENCE: ceiling}
        # Written in the order they are replayed, so that nonces increase across both servers.
        plans: list[list[Step]] = []
        for half, slices in enumerate(halves):
            restarted = None
            if half:
                assert ceiling is not None
                restarted = REFERENCE if ceiling.started_at < server.started_at else SERVICE
            plans.append(self._plan(scenario, rows, sizes, half, slices, ceiling is not None, restarted))
        slices_of: dict[str, list[Slice]] = {SERVICE: [], REFERENCE: []}
        shares: list[float] = []
        scans_before = self.db.sequential_scans(database) if database else 0
        for plan in plans:
            ran: dict[str, list[Slice]] = {SERVICE: [], REFERENCE: []}
            for step in plan:
                target = servers[step.role]
                assert target is not None
                what = scenario if step.role == SERVICE else reference_scenario
                if step.path is None:
                    log(f"    restarting the {step.role} server, so that the other one is the older")
                    target.restart()
                    self._wrk(target, step.warm, self.args.warmup)
                else:
                    ran[step.role].append(self._slice(target, what, rows, step.path, step.warm))
            if ran[REFERENCE]:
                shares.append(_rps(ran[SERVICE]) / _rps(ran[REFERENCE]))
            for role in ran:
                slices_of[role] += ran[role]
        return self._rows(server, (scenario, reference_scenario), rows, (database, scans_before), slices_of, shares)

    def _measure_side_by_side(
        self, server: Gunicorn, scenario: Scenario, rows: int | None, database: str | None, reference: Gunicorn | None
    ) -> list[Row]:
        """--side-by-side: the scenario on both servers at once, each with its own wrk, in
        slices; a second in which the machine is slow slows both alike. Two halves again, one
        with each server started first; the share is the geometric mean of the halves'."""
        if reference is None:
            raise RuntimeError("--side-by-side needs a reference: not with --no-ceiling")
        log(f"  {scenario.title} (side by side)")
        sizes = self._request_counts(server, scenario, rows)
        loads = {SERVICE: (server, scenario), REFERENCE: (reference, scenario if self.baseline else CEILING)}
        slices_of: dict[str, list[Slice]] = {SERVICE: [], REFERENCE: []}
        shares: list[float] = []
        scans_before = self.db.sequential_scans(database) if database else 0
        for half, slices in enumerate(slice_halves(self.args.slices)):
            if half:
                role = REFERENCE if reference.started_at < server.started_at else SERVICE
                restarted, its_scenario = loads[role]
                log(f"    restarting the {role} server, so that the other one is the older")
                restarted.restart()
                self._wrk(restarted, self._file(its_scenario, rows, sizes.restart, f"restart{half}"), self.args.warmup)
            ran: dict[str, list[Slice]] = {SERVICE: [], REFERENCE: []}
            for i in range(slices):
                for role, at_once in self._slices_at_once(loads, rows, sizes, f"{half}-{i}").items():
                    ran[role].append(at_once)
            shares.append(_rps(ran[SERVICE]) / _rps(ran[REFERENCE]))
            for role in ran:
                slices_of[role] += ran[role]
        scenarios = (scenario, loads[REFERENCE][1])
        return self._rows(server, scenarios, rows, (database, scans_before), slices_of, shares)

    def _request_counts(self, server: Gunicorn, scenario: Scenario, rows: int | None) -> RequestCounts:
        """Check the scenario with one request, warm the server up, and size the request files by its rate."""
        self._probe(server, scenario, rows)
        expected = self._warm_up(server, scenario, rows)
        return RequestCounts(
            requests_for(expected, slice_seconds(self.args)),
            requests_for(expected, SLICE_WARMUP_SECONDS),
            requests_for(expected, self.args.warmup),
        )

    def _rows(
        self,
        server: Gunicorn,
        scenarios: tuple[Scenario, Scenario],
        rows: int | None,
        scans: tuple[str | None, int],
        slices_of: dict[str, list[Slice]],
        shares: list[float],
    ) -> list[Row]:
        """The scenario's row and, when it had one, its reference's (first), from their slices;
        the scenario's share of the reference is the geometric mean of the halves' `shares`."""
        scenario, reference_scenario = scenarios
        database, scans_before = scans
        row = self._row(scenario, rows, slices_of[SERVICE])
        if database:
            time.sleep(STATS_DELAY_SECONDS)
            row.seq_scans = self.db.sequential_scans(database) - scans_before
        if row.non2xx:
            log(server.log_tail(10))
        if not slices_of[REFERENCE]:
            return [row]
        reference_row = self._row(reference_scenario, rows, slices_of[REFERENCE], baseline=bool(self.baseline))
        row.of_ceiling = math.prod(shares) ** (1 / len(shares))
        halves_text = " and ".join(_pct(share) for share in shares)
        log(f"    share of the reference: {halves_text} (one half each server started first): {_pct(row.of_ceiling)}")
        if not self.baseline:
            self.ceiling_rps = reference_row.rps
        return [reference_row, row]

    def _slices_at_once(
        self, loads: dict[str, tuple[Gunicorn, Scenario]], rows: int | None, sizes: RequestCounts, name: str
    ) -> dict[str, Slice]:
        """One slice of each server, at the same time, after an unmeasured second of both."""
        files = {
            role: (
                self._file(what, rows, sizes.slice, f"{role}{name}"),
                self._file(what, rows, sizes.warm, f"{role}{name}-warm"),
            )
            for role, (_, what) in loads.items()
        }
        roles = list(loads)
        with ThreadPoolExecutor(len(roles)) as pool:
            list(pool.map(lambda role: self._wrk(loads[role][0], files[role][1], SLICE_WARMUP_SECONDS), roles))
            postmaster = postmaster_pid(self.db.server.data_dir)
            meters = {role: CpuMeter(loads[role][0].process.pid, postmaster).start() for role in roles}
            results = dict(
                zip(
                    roles,
                    pool.map(lambda role: self._wrk(loads[role][0], files[role][0], slice_seconds(self.args)), roles),
                )
            )
            uses = {role: meter.stop() for role, meter in meters.items()}
        if any(result.wrapped for result in results.values()):
            raise RuntimeError("a side-by-side slice ran out of pre-signed requests: give a larger --warmup")
        total = sum(result.requests for result in results.values()) or 1
        return {role: Slice(results[role], _own_share(uses, role, results[role].requests / total)) for role in roles}

    def _plan(
        self,
        scenario: Scenario,
        rows: int | None,
        sizes: RequestCounts,
        half: int,
        slices: int,
        with_reference: bool,
        restarted: str | None,
    ) -> list[Step]:
        """One half's steps in the order they run: the restart of `restarted` and its warm-up,
        then reference, scenario, reference, ..., scenario, reference (or the scenario alone)."""
        ceiling_file = self._file(CEILING, rows, 1, "slice")

        def files(role: str, name: str) -> tuple[Path, Path]:
            if role == REFERENCE and not self.baseline:
                return ceiling_file, ceiling_file
            return self._file(scenario, rows, sizes.slice, name), self._file(scenario, rows, sizes.warm, f"{name}-warm")

        plan: list[Step] = []
        if restarted is not None:
            if restarted == REFERENCE and not self.baseline:
                plan.append(Step(restarted, None, ceiling_file))
            else:
                plan.append(Step(restarted, None, self._file(scenario, rows, sizes.restart, f"restart{half}")))
        for i in range(slices):
            if with_reference:
                plan.append(Step(REFERENCE, *files(REFERENCE, f"baseline{half}-{i}")))
            plan.append(Step(SERVICE, *files(SERVICE, f"slice{half}-{i}")))
        if with_reference:
            plan.append(Step(REFERENCE, *files(REFERENCE, f"baseline{half}-{slices}")))
        return plan

    def _row(self, scenario: Scenario, rows: int | None, slices: list[Slice], baseline: bool = False) -> Row:
        result = merge([s.result for s in slices])
        cpu = CpuUse.combined([s.cpu for s in slices])
        title = f"baseline ({self.baseline.describe()}): {scenario.title}" if baseline else scenario.title
        row = Row(
            scenario=scenario.key,
            title=title,
            rows=rows,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            non2xx=result.non2xx,
            socket_errors=result.socket_errors,
            requests=result.requests,
            codes=result.codes,
            other_cores=cpu.other,
            stolen_cores=cpu.stolen,
            within=result.answered_within(ANSWER_WITHIN_MS),
            baseline=baseline,
        )
        row.app_cpu_ms, row.pg_cpu_ms = cpu.per_request_ms(result.requests)
        codes = f" {result.codes}" if result.codes else ""
        who = "baseline" if baseline else scenario.title if scenario is CEILING else "service"
        log(
            f"    {who}: {row.rps:8.0f} req/s  p50 {row.p50_ms:6.2f} ms"
            f"  p99 {row.p99_ms:6.2f} ms  within {ANSWER_WITHIN_MS:g} ms {_pct(row.within)}"
            f"  non-2xx {row.non2xx}{codes}  socket errors {row.socket_errors}"
            f" {result.errors if row.socket_errors else ''}| CPU/request: app {row.app_cpu_ms:.2f} ms,"
            f" Postgres {row.pg_cpu_ms:.2f} ms; wrk {cpu.wrk:.2f} cores, other processes {row.other_cores:.2f}"
            f" cores, stolen {row.stolen_cores:.2f} cores"
        )
        return row


@dataclass
class Slice:
    result: WrkResult
    cpu: CpuUse


@dataclass(frozen=True)
class RequestCounts:
    """Pre-signed requests per file: a slice's, the unmeasured run before it, a restart's warm-up."""

    slice: int
    warm: int
    restart: int


SERVICE = "measured"
REFERENCE = "reference"


@dataclass(frozen=True)
class Step:
    """A slice of `role`'s server on `path` after an unmeasured run on `warm`; with no path,
    a restart of that server and a warm-up on `warm`."""

    role: str
    path: Path | None
    warm: Path


def _own_share(uses: dict[str, CpuUse], role: str, share: float) -> CpuUse:
    """What one of two servers measured side by side used: its own CPU, Postgres's in proportion
    to its requests, and as other load what neither server used."""
    use = uses[role]
    others = sum(u.service for r, u in uses.items() if r != role)
    return replace(use, postgres=use.postgres * share, other=max(0.0, use.other - others))


def _rps(slices: list[Slice]) -> float:
    return merge([s.result for s in slices]).rps


def slice_halves(slices: int) -> list[int]:
    """The slices of each half: one with each server started first (one half when only one slice)."""
    return [slices] if slices < 2 else [(slices + 1) // 2, slices // 2]


def slice_seconds(args: argparse.Namespace) -> int:
    """The length of one slice: wrk runs for whole seconds."""
    return max(1, round(args.duration / args.slices))


def requests_for(rate: float, seconds: float) -> int:
    """Pre-signed requests enough for `seconds` at `rate` requests/s, with room to spare."""
    return math.ceil(rate * seconds * 1.5) + 500


# -- the report ---------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    import flask
    import gunicorn

    return {
        "nproc": str(cores),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": f"{platform.system()} {platform.release()}",
        "gunicorn": gunicorn.__version__,
        "flask": flask.__version__,
    }


def _fmt_rows(rows: int | None) -> str:
    return "–" if rows is None else f"{rows:,}".replace(",", " ")


def _pct(value: float | None, decimals: int = 0) -> str:
    return "–" if value is None else f"{value * 100:.{decimals}f} %"


def table(results: list[Row], reference: str = "ceiling") -> str:
    lines = [
        f"| scenario | rows | req/s | p50 ms | p99 ms | answered ≤ 1 s | non-2xx | socket errors | of {reference}"
        " | CPU ms/req app + PG | seq scans | other load | stolen |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        is_reference = row.scenario == "ceiling" or row.baseline
        lines.append(
            f"| {row.title} | {'(' + _fmt_rows(row.rows) + ')' if row.scenario == 'ceiling' else _fmt_rows(row.rows)} "
            f"| {row.rps:.0f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {_pct(row.within, 1)} "
            f"| {row.non2xx} | {row.socket_errors} | {'100 %' if is_reference else _pct(row.of_ceiling)} "
            f"| {row.app_cpu_ms:.2f} + {row.pg_cpu_ms:.2f} | {'–' if row.seq_scans is None else row.seq_scans} "
            f"| {row.other_cores:.2f} | {row.stolen_cores:.2f} |"
        )
    return "\n".join(lines)


def targets(
    results: list[Row], rows_list: list[int], baseline: GunicornSettings | None = None
) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the targets that this run measured."""
    if baseline:
        return edge_targets(results, baseline, MONITORING_SHARE if baseline.env else 0.9)
    checks: list[tuple[str, str, bool]] = []
    by = {(r.scenario, r.rows): r for r in results}
    measured_rows = sorted(set(rows_list))
    for key, share, p99 in (("get", 0.5, 20.0), ("post", 0.3, 40.0)):
        rows_here = [by[(key, n)] for n in measured_rows if (key, n) in by]
        if not rows_here:
            continue
        name = "signed GET /compute" if key == "get" else "signed POST /compute"
        if rows_here[0].of_ceiling is not None:
            checks.append(
                (
                    f"{name} >= {share * 100:.0f} % of ceiling",
                    ", ".join(f"{_fmt_rows(r.rows)}: {_pct(r.of_ceiling)}" for r in rows_here),
                    all(r.of_ceiling >= share for r in rows_here),
                )
            )
        checks.append(
            (
                f"{name} p99 < {p99:.0f} ms",
                ", ".join(f"{_fmt_rows(r.rows)}: {r.p99_ms:.1f} ms" for r in rows_here),
                all(r.p99_ms < p99 for r in rows_here),
            )
        )
    if len(measured_rows) >= 2:
        low, high = measured_rows[0], measured_rows[-1]
        for scenario in SCENARIOS:
            a, b = by.get((scenario.key, low)), by.get((scenario.key, high))
            if a and b and a.rps:
                change = (b.rps - a.rps) / a.rps
                measured = f"{change * 100:+.0f} % req/s"
                if a.of_ceiling and b.of_ceiling:
                    # Each scenario's ceiling is measured around it: this part of the change is the
                    # machine's drift, not the service's.
                    relative = (b.of_ceiling - a.of_ceiling) / a.of_ceiling
                    measured += f" ({relative * 100:+.0f} % as a fraction of the ceiling)"
                    change = relative
                checks.append(
                    (
                        f"{scenario.title}: {_fmt_rows(high)} rows within 15 % of {_fmt_rows(low)}",
                        measured,
                        abs(change) <= 0.15,
                    )
                )
    checks += slow_client_targets(results)
    scanned = [r for r in results if r.seq_scans is not None]
    if scanned:
        checks.append(
            (
                "no sequential scan of jobs or nonces (every lookup indexed)",
                str(sum(r.seq_scans for r in scanned)),
                all(r.seq_scans == 0 for r in scanned),
            )
        )
    bad = sum(r.non2xx + r.socket_errors for r in results)
    checks.append(("zero non-2xx answers and socket errors", str(bad), bad == 0))
    return checks


def slow_client_targets(results: list[Row], share: float = 0.95) -> list[tuple[str, str, bool]]:
    """Under slow clients, at least `share` of the other requests answered within a second."""
    checks = []
    for row in results:
        if not row.baseline and BY_KEY.get(row.scenario, CEILING).attack:
            checks.append(
                (
                    f"{row.title} ({_fmt_rows(row.rows)} rows): >= {share * 100:.0f} % answered within"
                    f" {ANSWER_WITHIN_MS / 1000:g} s",
                    _pct(row.within, 1),
                    (row.within or 0) >= share,
                )
            )
    return checks


def edge_targets(results: list[Row], baseline: GunicornSettings, share: float = 0.9) -> list[tuple[str, str, bool]]:
    """Against the --baseline server: the slow-client targets, and signed GET and POST
    throughput at least `share` of the baseline's."""
    checks = []
    for row in results:
        if row.scenario in ("get", "post") and not row.baseline and row.of_ceiling is not None:
            checks.append(
                (
                    f"{row.title} ({_fmt_rows(row.rows)} rows): >= {share * 100:.0f} % of the req/s under"
                    f" {baseline.describe()}",
                    _pct(row.of_ceiling),
                    row.of_ceiling >= share,
                )
            )
    checks += slow_client_targets(results)
    bad = sum(
        r.non2xx + r.socket_errors for r in results if not r.baseline and not BY_KEY.get(r.scenario, CEILING).attack
    )
    checks.append(("zero non-2xx answers and socket errors without slow clients", str(bad), bad == 0))
    return checks


def report(
    results: list[Row],
    args: argparse.Namespace,
    settings: GunicornSettings,
    wrk: str,
    rows_list: list[int],
    baseline: GunicornSettings | None = None,
) -> int:
    info = machine()
    header = (
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['kernel']}, Python {info['python']}, "
        f"gunicorn {info['gunicorn']}, Flask {info['flask']}, {wrk_version(wrk)}.\n"
        f"Settings: gunicorn {settings.describe()}; wrk {args.wrk_threads} threads, {args.connections} connections, "
        f"{args.slices} slices of {slice_seconds(args)} s per scenario after {args.warmup:g} s"
        f" warm-up, each {'baseline' if baseline else 'ceiling'} row measured in slices"
        f" {'at the same time as' if args.side_by_side else 'alternating with'} the next row's, in two halves"
        " (one with each server started first); "
        f"{'keep-alive' if args.keep_alive else 'Connection: close on every request (as the Provider sends)'}; "
        f"embedded Postgres on the same machine; "
        f"SIGNATURE_REQUIRED=1, a fresh nonce per signed request."
    )
    checks = targets(results, rows_list, baseline)
    print()
    print(header)
    print()
    print(table(results, "baseline" if baseline else "ceiling"))
    print()
    print(
        f"Answered ≤ 1 s: requests answered within {ANSWER_WITHIN_MS / 1000:g} s, of those sent (one still unanswered"
        " when wrk stopped counts as late). "
        "CPU ms/req: CPU time per answered request in the server's processes (gunicorn master and workers)"
        " + in Postgres. Other load: cores that processes outside the benchmark (and the kernel) used meanwhile;"
        " stolen: cores the hypervisor gave to other machines (both ~0 on a quiet machine)."
        " Seq scans: sequential scans of the jobs and nonces tables during the measured slices"
        " (0: every lookup went through an index)."
    )
    disturbed = [r for r in results if r.other_cores + r.stolen_cores > 0.2]
    if disturbed:
        print(
            f"WARNING: other processes or machines took up to "
            f"{max(r.other_cores + r.stolen_cores for r in disturbed):.2f} cores during "
            f"{len(disturbed)} measurement(s); those figures are low. Run again on a quiet machine."
        )
    print()
    if baseline:
        print(f"Targets against the baseline ({baseline.describe()}):")
    else:
        official = settings.workers == 4 and settings.worker_class == "sync" and args.connections == 16
        print(
            "Targets"
            + (
                ""
                if official
                else " (the throughput targets were defined for 4 sync workers and 16 connections; this run differs)"
            )
            + ":"
        )
    print()
    print("| target | measured | met |")
    print("| --- | --- | --- |")
    for name, measured, met in checks:
        print(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": asdict(settings),
                    "baseline": asdict(baseline) if baseline else None,
                    "wrk_threads": args.wrk_threads,
                    "connections": args.connections,
                    "duration": args.duration,
                    "slices": args.slices,
                    "results": [asdict(r) for r in results],
                    "targets": [{"target": n, "measured": m, "met": ok} for n, m, ok in checks],
                },
                indent=2,
            )
        )
    # The baseline under slow clients is expected to fail: that is what it is measured for.
    if any(r.non2xx or r.socket_errors for r in results if not (r.baseline and BY_KEY[r.scenario].attack)):
        print("\nFAILED: some answers were not 2xx (or sockets failed); see the table and .bench/logs/.")
        return 1
    if args.strict and not all(ok for _, _, ok in checks):
        return 1
    return 0
