"""Algorithms that attack the machine, submitted through the API as a consumer's would be.

Each test submits a hostile algorithm with a signed POST /compute, lets the local engine
run it, and then checks from the host side that the attack failed: the database, the
listeners, the files and the processes of this machine are as they were, the job still
ends with a clear status and algorithm.log line, and a neighbouring job is unaffected.
The algorithms know every host path worth stealing (the test hands them over), which is
more than a real attacker would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operator_service.engine.workspace import workspace_for
from operator_service.tools.embedded_db import free_port
from tests.conftest import OWNER
from tests.engine_support import (
    COMPUTE,
    job_row,
    published,
    read_published,
    running_as,
    wait_finished,
    wait_for,
    wait_status,
)
from tests.metrics_support import scrape_exporter, value

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uids, cgroups and volumes per job need root")

# Every algorithm below reads its parameters from PARAMS and writes what it managed to do
# to outputs/report.json, which the test reads once the engine has published it.
PRELUDE = """
import json, os, socket, sys, time
PARAMS = json.loads(__PARAMS__)
REPORT = {}
def report():
    with open(os.path.join(os.environ["OUTPUTS"], "report.json"), "w") as out:
        json.dump(REPORT, out)
def attempt(name, action):
    try:
        REPORT[name] = ["succeeded", repr(action())[:200]]
    except BaseException as exc:
        REPORT[name] = ["failed", repr(exc)[:200]]
"""

# Speaks just enough of the Postgres protocol to run statements where authentication is
# trust: a row in nonces that locks the Provider out, and a shell command on the host.
DATABASE = (
    PRELUDE
    + r"""
def postgres(family, address):
    conn = socket.socket(family, socket.SOCK_STREAM)
    conn.settimeout(3)
    conn.connect(address)
    body = b"user\0postgres\0database\0" + PARAMS["database"].encode() + b"\0\0"
    conn.sendall((len(body) + 8).to_bytes(4, "big") + (196608).to_bytes(4, "big") + body)
    answer = conn.recv(4096)
    if answer[:1] != b"R" or int.from_bytes(answer[5:9], "big") != 0:
        return "connected, authentication refused"
    query = ("INSERT INTO nonces (provider, nonce, seconds) VALUES ('sandbox-attacker', '1', 99999999999);"
             " COPY (SELECT 1) TO PROGRAM 'touch " + PARAMS["marker"] + "'").encode() + b"\0"
    conn.sendall(b"Q" + (len(query) + 4).to_bytes(4, "big") + query)
    time.sleep(1)
    return conn.recv(4096)
attempt("database over TCP", lambda: postgres(socket.AF_INET, ("127.0.0.1", PARAMS["port"])))
attempt("database over its socket", lambda: postgres(socket.AF_UNIX, PARAMS["socket"]))
for host in PARAMS["hosts"]:
    attempt(f"listener on {host}", lambda: socket.create_connection((host, PARAMS["listener"]), timeout=3).close())
attempt("name lookup", lambda: socket.getaddrinfo("example.com", 443))
attempt("the internet", lambda: socket.create_connection(("1.1.1.1", 443), timeout=3).close())
report()
"""
)

# Waits until the test stops it, checking all the while that its input and output are intact.
NEIGHBOUR = """
import os, time
name = os.listdir(os.path.join(os.environ["INPUTS"], os.listdir(os.environ["INPUTS"])[0]))[0]
source = os.path.join(os.environ["INPUTS"], os.listdir(os.environ["INPUTS"])[0], name)
expected = open(source, "rb").read()
result = os.path.join(os.environ["OUTPUTS"], "result.txt")
with open(result, "w") as out:
    out.write(f"{len(expected)} bytes of input\\n")
written = open(result).read()
while True:
    changed = open(source, "rb").read() != expected or open(result).read() != written
    if changed or len(os.listdir(os.environ["OUTPUTS"])) != 1:
        with open(os.path.join(os.environ["OUTPUTS"], "tampered.txt"), "w") as out:
            out.write("tampered")
    time.sleep(0.1)
"""

FILES = (
    PRELUDE
    + """
def read(path):
    with open(path, "rb") as handle:
        return handle.read(100)
def listing(path):
    return os.listdir(path)
def write(path):
    with open(path, "w") as handle:
        handle.write("pwned")
for name, path in PARAMS["read"].items():
    attempt(f"read {name}", lambda: read(path))
for name, path in PARAMS["list"].items():
    attempt(f"list {name}", lambda: listing(path))
for name, path in PARAMS["write"].items():
    attempt(f"write {name}", lambda: write(path))
def other_environments():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(open(f"/proc/{pid}/environ", "rb").read())
            except OSError:
                pass
    return [env for env in found if PARAMS["neighbour_secret"].encode() in env]
REPORT["neighbour secrets seen in /proc"] = len(other_environments())
REPORT["processes seen"] = sorted(int(pid) for pid in os.listdir("/proc") if pid.isdigit())
attempt("write the system", lambda: write("/usr/pwned"))
report()
"""
)

# Starts processes that try to outlive the job: a double fork into a new session, a
# background shell job, and many sleepers; then ends as the test asks.
ESCAPE = (
    PRELUDE
    + """
import subprocess
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(1)
    os._exit(0)
os.system("nohup sleep 1000 > /dev/null 2>&1 &")
for _ in range(20):
    subprocess.Popen(["sleep", "1000"], start_new_session=True)
REPORT["uid"] = os.getuid()
report()
print("escapers started", flush=True)
if PARAMS["end"] != "exit":
    time.sleep(1000)
"""
)

MEMORY = (
    PRELUDE
    + """
import subprocess
children = [subprocess.Popen([sys.executable, "-c",
    "import time; block = bytearray(80 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); time.sleep(3)"])
    for _ in range(3)]
REPORT["exit codes"] = [child.wait() for child in children]
report()
"""
)

DISK = (
    PRELUDE
    + """
with open("/tmp/" + PARAMS["marker"], "w") as out:
    out.write("left behind?")
written = 0
chunk = b"x" * (1024 * 1024)
try:
    for index in range(4):
        folder = os.environ["OUTPUTS"] if index % 2 == 0 else "/tmp"
        with open(os.path.join(folder, f"part-{index}"), "wb") as out:
            for _ in range(8):
                out.write(chunk)
                out.flush()
                written += len(chunk)
except OSError as exc:
    REPORT["error"] = exc.strerror
REPORT["written"] = written
report()
"""
)

AFFINITY = (
    PRELUDE
    + """
attempt("widen CPUs", lambda: os.sched_setaffinity(0, range(PARAMS["cpus"])))
REPORT["cpus"] = sorted(os.sched_getaffinity(0))
report()
time.sleep(3)
"""
)


def algorithm(template: str, **params: Any) -> str:
    return template.replace("__PARAMS__", repr(json.dumps(params)))


def report_of(row: dict) -> dict:
    """What the algorithm wrote to outputs/report.json, read from the published results."""
    (entry,) = [entry for entry in published(row, "output") if entry["filename"] == "report.json"]
    return json.loads(Path(entry["url"].removeprefix("file://")).read_text())


def successes(report: dict) -> dict:
    """The attempts that succeeded (an empty dict when every one failed)."""
    return {
        name: outcome for name, outcome in report.items() if isinstance(outcome, list) and outcome[:1] == ["succeeded"]
    }


class Listener:
    """A TCP server on every address of this machine that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.server.close()


def machine_addresses() -> list[str]:
    addresses = {"127.0.0.1"}
    try:
        addresses.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    return sorted(addresses)


def limits_hit(port: int, limit: str) -> float:
    """How many algorithms the engine exporting on `port` has counted as stopped by `limit`."""
    return value(scrape_exporter(port), "operator_engine_limits_hit_total", limit=limit)


def nonce_rows(db, provider: str) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM nonces WHERE provider = %s", (provider,))
        return cur.fetchone()[0]


def test_an_algorithm_reaches_neither_the_database_nor_any_port_of_the_machine(
    db, settings, submit_job, start_engine, listener, tmp_path
):
    start_engine()
    marker = Path("/tmp") / f"sandbox-attack-{uuid.uuid4().hex}"
    postgres = settings.postgres
    job_id = submit_job(
        algorithm(
            DATABASE,
            port=postgres.port,
            socket=f"{postgres.host}/.s.PGSQL.{postgres.port}",
            database=postgres.database,
            marker=str(marker),
            hosts=machine_addresses(),
            listener=listener.port,
        )
    )
    row = wait_finished(db, job_id)

    assert (row["status"], row["statusText"]) == (70, "Job finished")
    assert "the algorithm exited with code 0" in read_published(row, "algorithmLog")
    report = report_of(row)
    assert set(report) >= {"database over TCP", "database over its socket", "name lookup", "the internet"}
    assert successes(report) == {}
    assert listener.accepted == 0
    assert nonce_rows(db, "sandbox-attacker") == 0
    assert not marker.exists()


def test_an_algorithm_cannot_touch_another_job_the_results_or_the_engine(
    client, db, provider, settings, submit_job, start_engine, inputs
):
    engine = start_engine(max_job_duration=60.0)
    finished = wait_finished(db, submit_job("print('an earlier job, finished')"))
    earlier_log = Path(published(finished, "algorithmLog")[0]["url"].removeprefix("file://"))
    neighbour = submit_job(NEIGHBOUR)
    wait_status(db, neighbour, 40)
    neighbour_data = engine.job_data(neighbour)
    wait_for(lambda: (neighbour_data / "outputs" / "result.txt").exists(), "the neighbour to write its result")
    neighbour_input = next((neighbour_data / "inputs").rglob("0"))
    input_size = len(neighbour_input.read_bytes())
    neighbour_secret = job_row(db, neighbour)["workflow"]["metadata"]["secret"]
    key_file = engine.config.work_dir / ".operator-key"
    postgres_dir = Path(settings.postgres.host)
    source = Path(__file__).resolve().parents[1] / "operator_service" / "__init__.py"

    attacker = submit_job(
        algorithm(
            FILES,
            read={
                "the neighbour's input": str(neighbour_input),
                "a finished job's published log": str(earlier_log),
                "the operator key": str(key_file),
                "the database password": str(postgres_dir / "operator-password"),
                "the service's code": str(source),
                "root's home": "/root/.bashrc",
                "the neighbour's admin log": str(workspace_for(engine.config.work_dir, neighbour).configure_log),
            },
            list={
                "the engine's work folder": str(engine.config.work_dir),
                "the results": str(settings.results_dir),
                "the database's files": str(postgres_dir),
                "/home": "/home",
                "/run": "/run",
                "/var": "/var",
            },
            write={
                "the neighbour's outputs": str(neighbour_data / "outputs" / "pwned.txt"),
                "the neighbour's result": str(neighbour_data / "outputs" / "result.txt"),
                "the results": str(Path(settings.results_dir) / "pwned.txt"),
                "/data": "/data/pwned.txt",
            },
            neighbour_secret=neighbour_secret,
        )
    )
    row = wait_finished(db, attacker)
    response = client.put(
        COMPUTE, query_string={"owner": OWNER, "jobId": neighbour, **provider.signed(OWNER, neighbour)}
    )
    assert response.status_code == 200
    neighbour_row = wait_finished(db, neighbour)

    report = report_of(row)
    assert successes(report) == {}
    assert report["neighbour secrets seen in /proc"] == 0
    assert len(report["processes seen"]) <= 4, "only its own processes: the sandbox's init, sh, python"
    assert (neighbour_row["status"], neighbour_row["stopreq"]) == (70, 1)
    assert [entry["filename"] for entry in published(neighbour_row, "output")] == ["result.txt"]
    assert read_published(neighbour_row, "output") == f"{input_size} bytes of input\n"
    assert earlier_log.read_text().startswith("an earlier job, finished")
    assert not (Path(settings.results_dir) / "pwned.txt").exists()


@pytest.mark.parametrize("end", ["exit", "stop", "timeout"])
def test_nothing_an_algorithm_starts_outlives_its_job(client, db, provider, submit_job, start_engine, end):
    engine = start_engine(max_job_duration=4.0 if end == "timeout" else 30.0, max_jobs=1)
    job_id = submit_job(algorithm(ESCAPE, end=end))
    if end != "exit":
        report_file = engine.job_data(job_id) / "outputs" / "report.json"
        wait_for(lambda: report_file.exists() and report_file.read_text(), "the escapers to start")
    if end == "stop":
        client.put(COMPUTE, query_string={"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)})
    row = wait_finished(db, job_id, timeout=30)
    uid = report_of(row)["uid"]

    assert row["status"] == 70
    assert running_as(uid) == [], "every process of the job is gone, as seen from the host"
    next_job = wait_finished(db, submit_job("import subprocess; subprocess.run(['true'], check=True); print('forked')"))
    assert "forked" in read_published(next_job, "algorithmLog"), "nothing left behind takes the next job's processes"


def test_memory_is_limited_for_the_job_not_for_each_process(db, submit_job, start_engine):
    port = free_port()
    start_engine(ram_gb=0.125, metrics_bind=f"127.0.0.1:{port}")
    before = limits_hit(port, "memory")
    row = wait_finished(db, submit_job(algorithm(MEMORY)), timeout=30)

    assert row["status"] == 70
    codes = report_of(row)["exit codes"]
    assert any(code != 0 for code in codes), f"three processes of 80 MiB each all fitted in 128 MiB: {codes}"
    assert "used more than its memory (ramGB=0.125): the kernel killed it" in read_published(row, "algorithmLog")
    assert limits_hit(port, "memory") == before + 1, "the engine's metrics count the memory limit hit"


def test_disk_is_limited_for_the_job_across_all_its_files(db, submit_job, start_engine, settings):
    disk_bytes = int(0.02 * 1024**3)
    marker = f"sandbox-tmp-{uuid.uuid4().hex}"
    port = free_port()
    engine = start_engine(disk_gb=0.02, metrics_bind=f"127.0.0.1:{port}")
    before = limits_hit(port, "disk")
    job_id = submit_job(algorithm(DISK, marker=marker))
    row = wait_finished(db, job_id, timeout=30)

    assert row["status"] == 70
    report = report_of(row)
    assert report["error"] == "No space left on device"
    assert report["written"] < disk_bytes, "32 MiB in four files of 8 MiB each did not fit in 20 MiB"
    assert sum(entry["filesize"] for entry in published(row, "output")) < disk_bytes
    assert "the job's disk (diskGB=0.02) is full" in read_published(row, "algorithmLog")
    assert limits_hit(port, "disk") == before + 1, "the engine's metrics count the disk limit hit"
    assert not (Path("/tmp") / marker).exists(), "/tmp is the job's own"
    wait_for(lambda: not engine.job_folder(job_id).exists(), "the job's disk to be gone with the job")


def test_an_algorithm_cannot_widen_its_cpus(db, submit_job, start_engine):
    engine = start_engine(cpus=1)
    job_id = submit_job(algorithm(AFFINITY, cpus=os.cpu_count()))
    report_file = engine.job_data(job_id) / "outputs" / "report.json"
    wait_for(report_file.exists, "the algorithm to try")
    uid = report_file.stat().st_uid
    allowed = {
        Path(f"/proc/{pid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0] for pid in running_as(uid)
    }
    row = wait_finished(db, job_id)

    assert row["status"] == 70
    assert len(report_of(row)["cpus"]) == 1
    assert allowed and all("," not in cpus and "-" not in cpus for cpus in allowed), allowed


def test_an_environment_can_opt_in_to_the_host_network_and_the_engine_says_what_that_means(
    db, submit_job, start_engine, listener, caplog
):
    caplog.set_level(logging.WARNING)
    start_engine(host_network=True)
    job_id = submit_job(
        algorithm(
            PRELUDE
            + """
attempt("listener", lambda: socket.create_connection(("127.0.0.1", PARAMS["listener"]), timeout=3).close())
report()
""",
            listener=listener.port,
        )
    )
    row = wait_finished(db, job_id)

    assert successes(report_of(row)) == {"listener": ["succeeded", "None"]}
    wait_for(lambda: listener.accepted == 1, "the listener to count the connection")
    assert any(
        "ENGINE_UNSAFE_HOST_NETWORK=1: algorithms share this machine's network and can reach everything it"
        " can" in message
        for message in caplog.messages
    )
    assert any(f"job {job_id}: the algorithm shares this machine's network" in message for message in caplog.messages)
