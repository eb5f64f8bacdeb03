"""`operator-service demo`: a real order's workflow through a running service, from request to result.

It starts its own stand-ins for Ocean's metadata cache and Provider on 127.0.0.1
(tools/ocean_standins.py) and waits for an engine to announce an environment; the stand-in
Provider then knows that environment's consumerAddress, as a real Provider reads it from
GET /environments. It publishes a sample dataset and a Python algorithm that counts its
lines, orders both for that address, submits the compute request a Provider sends (each
asset `remote`: a DID, an order and a service id, no URL), shows each status change, and
downloads the result into the current folder, never over an existing file. The engine
fetches the assets from the stand-ins on 127.0.0.1, so it must run on this machine (as
`make run` runs it). The Provider's key is DEMO_PROVIDER_KEY, or a new one (fine unless the
service sets SIGNATURE_REQUIRED=1 with ALLOWED_PROVIDERS).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import requests
from eth_keys.datatypes import PrivateKey
from eth_keys.exceptions import ValidationError

from operator_service.command_line import ArgumentParser, positive_seconds
from operator_service.tools import local_service
from operator_service.tools.ocean_standins import AssetFile, OceanStandIns, Provider, Purchase, provider_stage

API = "/api/v1/operator"
SAMPLE_LINES = 42
SAMPLE = "".join(f"sample line {n}\n" for n in range(1, SAMPLE_LINES + 1)).encode()
STAGES = (1, 20, 30, 40, 60, 70)
SPINNER = "|/-\\"
REQUEST_TIMEOUT = 15
POLL_SECONDS = 0.25
DATASET_NAME = "Demo sample lines"
ALGORITHM_NAME = "Line counter"
# The container the algorithm's DDO names: what the engine runs it in when it uses docker.
ALGORITHM_CONTAINER = {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": ""}
ALGORITHM_OPTIONS = {"title": "Lines per file"}  # the job's algocustomdata

ALGORITHM = """import json, os, time
time.sleep(2)  # a pause, so that the demo can show the running stage
with open(os.path.join(os.environ["INPUTS"], "algoCustomData.json")) as handle:
    options = json.load(handle) or {}
report, total = [options.get("title", "Line count")], 0
for did in json.loads(os.environ["DIDS"]):
    with open(os.path.join(os.environ["VOLUME"], "ddos", did)) as handle:
        name = json.load(handle)["metadata"]["name"]
    folder = os.path.join(os.environ["INPUTS"], did)
    for file in sorted(os.listdir(folder)):
        with open(os.path.join(folder, file), "rb") as handle:
            lines = sum(1 for _ in handle)
        report.append(f"{name} (did:op:{did[:12]}...), file {file}: {lines} lines")
        total += lines
report.append(f"total: {total} lines")
with open(os.path.join(os.environ["OUTPUTS"], "result.txt"), "w") as out:
    out.write("\\n".join(report) + "\\n")
print("\\n".join(report))
"""


class DemoError(Exception):
    """Why the demo stopped, in words for the person who ran it."""


def demo_provider_key() -> PrivateKey | None:
    """DEMO_PROVIDER_KEY, when set: the key the stand-in Provider signs with."""
    raw = (os.environ.get("DEMO_PROVIDER_KEY") or "").strip()
    if not raw:
        return None
    try:
        return PrivateKey(bytes.fromhex(raw.removeprefix("0x")))
    except (ValueError, ValidationError):
        raise DemoError("DEMO_PROVIDER_KEY must be a 32-byte hex private key") from None


class Service:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, self.url + API + path, timeout=REQUEST_TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise DemoError(
                f"cannot reach the service at {self.url} ({exc.__class__.__name__}); is it running (make run)?"
                " If it listens elsewhere, say where: make demo URL=http://HOST:PORT, or --url, DEMO_URL"
                " or OPERATOR_BIND"
            ) from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        if response.status_code != 200:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text.strip()[:500]}")
        try:
            return response.json()
        except ValueError:
            raise DemoError(f"{method} {path} did not answer JSON; is {self.url} the operator-service?") from None


def wait_for_environment(service: Service, wanted: str | None, deadline: float, out: TextIO) -> dict:
    """The environment an engine announces (`wanted`, or the first one), with its consumerAddress."""
    out.write("waiting for a compute environment to be announced by an engine...\n")
    while True:
        found = {env.get("id"): env for env in service.json("GET", "/environments") if isinstance(env, dict)}
        chosen = found.get(wanted) if wanted else next(iter(found.values()), None)
        if chosen is not None:
            if not chosen.get("consumerAddress"):
                raise DemoError(f"environment {chosen.get('id')} announces no consumerAddress")
            out.write(f"environment: {chosen['id']}, consumerAddress {chosen['consumerAddress']}\n")
            return chosen
        if time.monotonic() > deadline:
            raise DemoError(
                f"no engine announced {'environment ' + wanted if wanted else 'an environment'};"
                " is the engine running (make run starts one)?"
            )
        time.sleep(1)


def publish_and_order(ocean: OceanStandIns, consumer: str, owner: str, out: TextIO) -> tuple[Purchase, Purchase]:
    """The sample dataset and the algorithm, published and ordered for `consumer`, paid by `owner`."""
    dataset = ocean.publish([AssetFile(SAMPLE, "sample.txt", "text/plain")], name=DATASET_NAME)
    algorithm = ocean.publish(
        [AssetFile(ALGORITHM.encode(), "count_lines.py", "text/x-python")],
        kind="algorithm",
        name=ALGORITHM_NAME,
        container=ALGORITHM_CONTAINER,
    )
    out.write(f"published dataset {dataset.did} ({SAMPLE_LINES} lines) and algorithm {algorithm.did}\n")
    orders = ocean.order(dataset, consumer, payer=owner), ocean.order(algorithm, consumer, payer=owner)
    out.write(f"ordered both for the environment's consumerAddress, paid by the user {owner}\n")
    return orders


def submit(service: Service, ocean: OceanStandIns, stage: dict, owner: str, environment: str, agreement: str) -> str:
    """POST the Provider's compute request (its computeStart body) to the service; the job id."""
    body = ocean.compute_request(stage, owner, environment, agreement)
    return _one_job(service.json("POST", "/compute", json=body))["jobId"]


def _one_job(answer: Any) -> dict:
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        raise DemoError(f"expected one job in the answer, got: {str(answer)[:300]}")
    return answer[0]


class Progress:
    """One line per status change; on a terminal also a spinner and a stage bar, redrawn in place."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.last: tuple[int, str] | None = None
        self.spinner: Iterator[str] = itertools.cycle(SPINNER)

    def show(self, status: int, text: str) -> None:
        elapsed = time.monotonic() - self.started
        if (status, text) != self.last:
            self.last = (status, text)
            self._clear()
            self.out.write(f"[{elapsed:6.1f}s] {status:>2} {text.strip()}\n")
        if self.tty:
            done = sum(1 for stage in STAGES if stage <= status)
            bar = "#" * done + "-" * (len(STAGES) - done)
            self.out.write(f"\r{next(self.spinner)} [{bar}] {text.strip()} ({elapsed:.0f}s)")
        self.out.flush()

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self.tty:
            self.out.write("\r\033[K")


def follow(service: Service, provider: Provider, owner: str, job_id: str, deadline: float, out: TextIO) -> dict:
    progress = Progress(out)
    try:
        while True:
            query = {"owner": owner, "jobId": job_id, **provider.signed(owner, job_id)}
            job = _one_job(service.json("GET", "/compute", params=query))
            progress.show(int(job["status"]), str(job["statusText"]))
            if job.get("dateFinished"):
                return job
            if time.monotonic() > deadline:
                raise DemoError(
                    f"job {job_id} did not finish in time (last status {job['status']} {job['statusText'].strip()})"
                )
            time.sleep(POLL_SECONDS)
    finally:
        progress.done()


def download(service: Service, provider: Provider, owner: str, job: dict, folder: Path) -> Path:
    results = job.get("results") or []
    outputs = [index for index, entry in enumerate(results) if entry.get("type") == "output"]
    if int(job["status"]) != 70 or job.get("stopreq") or not outputs:
        raise DemoError(
            f"job {job['jobId']} ended with status {job['status']} {job['statusText'].strip()},"
            f" stopreq {job.get('stopreq')}, and no output to download"
            + _configure_failure(service, provider, owner, job)
        )
    target = _free_name(folder, Path(str(results[outputs[0]].get("filename") or "result")).name)
    target.write_bytes(_result(service, provider, owner, job["jobId"], outputs[0]))
    return target


def _result(service: Service, provider: Provider, owner: str, job_id: str, index: int) -> bytes:
    query = {"index": index, "jobId": job_id, "owner": owner, **provider.signed(owner, job_id)}
    response = service.call("GET", "/getResult", params=query)
    if response.status_code != 200:
        raise DemoError(f"getResult answered {response.status_code}: {response.text.strip()[:500]}")
    return response.content


def _configure_failure(service: Service, provider: Provider, owner: str, job: dict) -> str:
    """What the job's configure log says from its failure on (nothing if it names no failure)."""
    logs = [index for index, entry in enumerate(job.get("results") or []) if entry.get("type") == "configrationLog"]
    if not logs:
        return ""
    lines = _result(service, provider, owner, job["jobId"], logs[0]).decode(errors="replace").splitlines()
    failed = [index for index, line in enumerate(lines) if " failed: " in line]
    if not failed:
        return ""
    said = "\n  ".join(line.split(" ", 1)[-1] for line in lines[failed[-1] :])
    return f"; the engine's configure log says:\n  {said}"


def _free_name(folder: Path, name: str) -> Path:
    """`name` in `folder`, or name-1, name-2, ... if it is taken: never overwrite a file."""
    stem, suffix = os.path.splitext(name)
    candidates = itertools.chain([name], (f"{stem}-{n}{suffix}" for n in itertools.count(1)))
    return next(folder / candidate for candidate in candidates if not (folder / candidate).exists())


def run(url: str, environment: str | None, timeout: float, out: TextIO) -> Path:
    deadline = time.monotonic() + timeout
    service = Service(url)
    ocean = OceanStandIns(provider_key=demo_provider_key())
    try:
        out.write(f"metadata cache (stand-in): {ocean.metadata_uri}\n")
        out.write(f"Provider (stand-in): {ocean.provider.url}, address {ocean.provider.address}\n")
        chosen = wait_for_environment(service, environment, deadline, out)
        consumer = chosen["consumerAddress"]
        ocean.provider.allow_compute_consumer(consumer)
        owner = PrivateKey(os.urandom(32)).public_key.to_checksum_address()
        dataset, algorithm = publish_and_order(ocean, consumer, owner, out)
        stage = provider_stage(ocean, [dataset], algorithm, algocustomdata=ALGORITHM_OPTIONS)
        job_id = submit(service, ocean, stage, owner, chosen["id"], dataset.tx_id)
        out.write(f"submitted job {job_id}: the dataset and the algorithm as remote assets (DID, order, service)\n")
        job = follow(service, ocean.provider, owner, job_id, deadline, out)
        served = [query for query in ocean.provider.downloads if query.get("consumerAddress") == consumer]
        out.write(f"the Provider served {len(served)} signed download(s) to {consumer}\n")
        return download(service, ocean.provider, owner, job, Path.cwd())
    finally:
        ocean.close()


def parser() -> ArgumentParser:
    parser = ArgumentParser(prog="operator-service demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        help="the service, e.g. http://127.0.0.1:8050 (default: DEMO_URL, else where OPERATOR_BIND or the"
        " running operator-service run listens, else http://127.0.0.1:8050)",
    )
    parser.add_argument("--environment", help="the environment to use (default: the first announced)")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=180.0,
        help="give up after this many seconds (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    service = local_service.find(args.url)
    print(f"service: {service.url} (from {service.source})")
    try:
        target = run(service.url, args.environment, args.timeout, sys.stdout)
    except DemoError as exc:
        print(f"operator-service demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("operator-service demo: interrupted", file=sys.stderr)
        return 130
    print(f"result downloaded to {target}:")
    print(target.read_text(errors="replace"), end="")
    return 0
