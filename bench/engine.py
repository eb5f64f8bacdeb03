"""`python -m bench.engine`: what the sandbox costs the local engine, per job.

Two local engines run side by side on one embedded Postgres, each in its own environment:
one isolates algorithms as `make run` does (bubblewrap, a uid per job, cgroups, a volume per
job), the other not at all (a plain process, as the engine ran before the sandbox). Trivial
jobs (the algorithm writes the time and exits) are submitted through the API to each in
turn, one job at a time, and two times are measured per job:

- POST -> 40: from sending POST /compute to the job's status reading 40 (Running algorithm);
  includes waiting for the engine's next poll (ENGINE_POLL_SECONDS, here 0.02 s) and, with
  the sandbox, the uid lease and the job's volume;
- exit -> 70: from the moment the algorithm wrote its last line to the status reading 70
  (Job finished); includes, with the sandbox, killing and checking the job's processes and
  removing its cgroup;
- POST -> 70: the whole job, which also includes starting the algorithm (with the sandbox:
  bubblewrap setting up its namespaces and mounts, the cgroup).

Times come from polling the database every 2 ms, the same for both engines. Jobs alternate
between the two engines, so a machine that slows down for a while slows both alike. The
table gives the median and the 90th percentile, and the sandbox's cost as the difference of
the medians. Needs root (the sandbox's uids, cgroups and volumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from operator_service.api.app import create_app
from operator_service.config import load_settings
from operator_service.domain.signatures import provider_message, sign_provider_message
from operator_service.engine.job import EngineContext
from operator_service.engine.lease import NamespaceLease
from operator_service.engine.runner import Engine
from operator_service.engine.sandbox.isolation import Isolation, set_up_isolation
from operator_service.engine.settings import EngineConfig
from operator_service.engine.workspace import prepare_work_dir
from operator_service.model.status import JobStatus
from operator_service.store import migrations
from operator_service.store.pool import Database
from operator_service.tools.embedded_db import EmbeddedPostgres

OWNER = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"
TARGET_MS = 300
POLL_SECONDS = 0.02
WATCH_SECONDS = 0.002
# The algorithm's last act: the time, for "exit -> 70".
TRIVIAL = "import os, time\nopen(os.path.join(os.environ['OUTPUTS'], 'exit.txt'), 'w').write(repr(time.time()))\n"
NO_ISOLATION = Isolation(bwrap=None, host_network=False, uids=None, cgroups=None, volumes=False, docker=False)


@dataclass
class Timings:
    title: str
    to_running: list[float] = field(default_factory=list)
    exit_to_finished: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


class Bench:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.server = EmbeddedPostgres(data_dir / "postgres")
        self.results = data_dir / "results"
        self.stop = threading.Event()
        self.provider_key = "0x" + "01" * 32

    def start(self) -> None:
        self.server.start()
        self.server.create_database("bench_engine")
        env = {**self.server.env("bench_engine"), "KUBERNETES": "off", "RESULTS_DIR": str(self.results)}
        self.settings = load_settings(env)
        self.db = Database(self.settings.postgres, max_connections=4)
        migrations.upgrade(self.db)
        self.client = create_app(self.settings).test_client()

    def start_engine(self, namespace: str, sandboxed: bool) -> None:
        config = EngineConfig(
            namespace=namespace,
            work_dir=self.data_dir / namespace,
            results_dir=self.results,
            poll_seconds=POLL_SECONDS,
            use_docker="off",
            max_jobs=2,
            max_job_duration=60.0,
        )
        prepare_work_dir(config.work_dir, open_to_job_users=True)
        isolation = set_up_isolation(config) if sandboxed else NO_ISOLATION
        db = Database(self.settings.postgres, max_connections=4)
        lease = NamespaceLease.take(self.settings.postgres, namespace, self.stop)
        engine = Engine(EngineContext(db, config, self.stop, isolation), "0x" + "00" * 20, lease)
        threading.Thread(target=engine.run, daemon=True).start()
        self._wait(lambda: self._announced(namespace), 30)

    def _announced(self, namespace: str) -> bool:
        with self.db.cursor() as cur:
            cur.execute("SELECT 1 FROM envs WHERE namespace = %s", (namespace,))
            return cur.fetchone() is not None

    def run_job(self, namespace: str, timings: Timings) -> None:
        nonce = str(time.time_ns())
        body = {
            "agreementId": uuid.uuid4().hex,
            "owner": OWNER,
            "environment": namespace,
            "chainId": 8996,
            "nonce": nonce,
            "providerSignature": sign_provider_message(self.provider_key, provider_message(OWNER, None, nonce)),
            "workflow": {
                "stages": [
                    {
                        "index": 0,
                        "input": [],
                        "output": {},
                        "compute": {"Instances": 1},
                        "algorithm": {
                            "id": "raw",
                            "rawcode": TRIVIAL,
                            "container": {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11"},
                        },
                    }
                ]
            },
        }
        posted = time.time()
        response = self.client.post("/api/v1/operator/compute", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"POST /compute answered {response.status_code}: {response.get_data(as_text=True)}")
        job_id = response.get_json()[0]["jobId"]
        self._wait(lambda: self._status(job_id) >= JobStatus.RUNNING, 60)
        timings.to_running.append(time.time() - posted)
        self._wait(lambda: self._status(job_id) == JobStatus.FINISHED, 60)
        finished = time.time()
        timings.exit_to_finished.append(finished - self._exit_time(job_id))
        timings.whole.append(finished - posted)

    def _status(self, job_id: str) -> int:
        with self.db.cursor() as cur:
            cur.execute("SELECT status FROM jobs WHERE workflowId = %s", (job_id,))
            return cur.fetchone()[0]

    def _exit_time(self, job_id: str) -> float:
        with self.db.cursor() as cur:
            cur.execute("SELECT outputsURL FROM jobs WHERE workflowId = %s", (job_id,))
            outputs = json.loads(cur.fetchone()[0])
        (url,) = [entry["url"] for entry in outputs if entry["filename"] == "exit.txt"]
        return float(Path(url.removeprefix("file://")).read_text())

    @staticmethod
    def _wait(condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("the engine did not get there in time")
            time.sleep(WATCH_SECONDS)

    def close(self) -> None:
        self.stop.set()
        time.sleep(0.5)
        self.server.stop()


def report(sandboxed: Timings, plain: Timings) -> list[str]:
    columns = (("POST -> 40", "to_running"), ("exit -> 70", "exit_to_finished"), ("POST -> 70", "whole"))
    lines = [
        "| engine | jobs | " + " | ".join(f"{name}, median ms | p90 ms" for name, _ in columns) + " |",
        "| --- | ---: |" + " ---: | ---: |" * len(columns),
    ]
    for timings in (sandboxed, plain):
        cells = [
            f"{_ms(statistics.median(getattr(timings, key)))} | {_ms(_percentile(getattr(timings, key), 0.9))}"
            for _, key in columns
        ]
        lines.append(f"| {timings.title} | {len(timings.whole)} | " + " | ".join(cells) + " |")
    added = {
        key: statistics.median(getattr(sandboxed, key)) - statistics.median(getattr(plain, key)) for _, key in columns
    }
    met = "yes" if max(added["to_running"] + added["exit_to_finished"], added["whole"]) * 1000 <= TARGET_MS else "NO"
    lines += [
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| the sandbox adds at most {TARGET_MS} ms per job | {_ms(added['to_running'])} ms before the algorithm"
        f" runs + {_ms(added['exit_to_finished'])} ms after it exits; {_ms(added['whole'])} ms on the whole job"
        f" | {met} |",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs per engine (default 20)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    bench = Bench(data_dir)
    try:
        bench.start()
        bench.start_engine("bench-sandbox", sandboxed=True)
        bench.start_engine("bench-plain", sandboxed=False)
        sandboxed, plain = Timings("sandboxed (as make run)"), Timings("no isolation at all")
        for _ in range(args.jobs):
            bench.run_job("bench-sandbox", sandboxed)
            bench.run_job("bench-plain", plain)
        lines = report(sandboxed, plain)
        print("\n".join(lines))
        return 0 if lines[-1].endswith("yes |") else 1
    finally:
        bench.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
