"""`operator-service demo`: one compute job through a running service, from request to result.

It plays the Ocean Provider: it serves a small sample file over HTTP on 127.0.0.1,
waits for an engine to announce an environment, submits a signed job whose Python
algorithm counts the lines of every input, shows each status change, and downloads
the result into the current folder. The Provider key is DEMO_PROVIDER_KEY, or a new
one (fine unless the service sets SIGNATURE_REQUIRED=1 with ALLOWED_PROVIDERS).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import requests
from eth_keys import keys

from operator_service.command_line import ArgumentParser, positive_seconds
from operator_service.domain.signatures import provider_message, sign_provider_message
from operator_service.tools import local_service

API = "/api/v1/operator"
SAMPLE_LINES = 42
SAMPLE = "".join(f"sample line {n}\n" for n in range(1, SAMPLE_LINES + 1)).encode()
STAGES = (1, 20, 30, 40, 60, 70)
SPINNER = "|/-\\"
REQUEST_TIMEOUT = 15
POLL_SECONDS = 0.25

ALGORITHM = """import json, os, time
time.sleep(2)  # a pause, so that the demo can show the running stage
report, total = [], 0
for did in json.loads(os.environ["DIDS"]):
    folder = os.path.join(os.environ["INPUTS"], did)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as handle:
            lines = sum(1 for _ in handle)
        report.append(f"{did[:12]}.../{name}: {lines} lines")
        total += lines
report.append(f"total: {total} lines")
with open(os.path.join(os.environ["OUTPUTS"], "result.txt"), "w") as out:
    out.write("\\n".join(report) + "\\n")
print("\\n".join(report))
"""


class DemoError(Exception):
    """Why the demo stopped, in words for the person who ran it."""


class _Sample(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(SAMPLE)))
        self.end_headers()
        self.wfile.write(SAMPLE)

    def log_message(self, *args: Any) -> None:
        pass


def serve_sample() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sample)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/sample.txt"


@dataclass
class Provider:
    """Signs as the Ocean Provider: owner + (jobId or "") + nonce, with a fresh nonce each call."""

    private_key: str
    owner: str
    _last_nonce: int = 0

    def signed(self, job_id: str = "") -> dict[str, str]:
        self._last_nonce = max(time.time_ns(), self._last_nonce + 1)
        nonce = str(self._last_nonce)
        signature = sign_provider_message(self.private_key, provider_message(self.owner, job_id, nonce))
        return {"nonce": nonce, "providerSignature": signature}


def new_provider() -> Provider:
    key = os.environ.get("DEMO_PROVIDER_KEY") or "0x" + os.urandom(32).hex()
    owner = keys.PrivateKey(os.urandom(32)).public_key.to_checksum_address()
    return Provider(key, owner)


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


def wait_for_environment(service: Service, wanted: str | None, deadline: float, out: TextIO) -> str:
    out.write("waiting for a compute environment to be announced by an engine...\n")
    while True:
        found = [env.get("id") for env in service.json("GET", "/environments")]
        if wanted in found or (wanted is None and found):
            chosen = wanted or found[0]
            out.write(f"environment: {chosen}\n")
            return chosen
        if time.monotonic() > deadline:
            raise DemoError(
                f"no engine announced {'environment ' + wanted if wanted else 'an environment'};"
                " is the engine running (make run starts one)?"
            )
        time.sleep(1)


def submit(service: Service, provider: Provider, environment: str, input_url: str) -> str:
    workflow = {
        "stages": [
            {
                "index": 0,
                "input": [{"index": 0, "id": "did:op:" + os.urandom(32).hex(), "url": [input_url]}],
                "algorithm": {
                    "id": "",
                    "rawcode": ALGORITHM,
                    "container": {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": ""},
                },
                "compute": {"Instances": 1, "namespace": environment, "maxtime": 60},
                "output": {},
            }
        ]
    }
    body = {
        "workflow": workflow,
        "agreementId": "demo-" + uuid.uuid4().hex,
        "owner": provider.owner,
        "environment": environment,
        **provider.signed(),
    }
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


def follow(service: Service, provider: Provider, job_id: str, deadline: float, out: TextIO) -> dict:
    progress = Progress(out)
    try:
        while True:
            query = {"owner": provider.owner, "jobId": job_id, **provider.signed(job_id)}
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


def download(service: Service, provider: Provider, job: dict, folder: Path) -> Path:
    results = job.get("results") or []
    outputs = [index for index, entry in enumerate(results) if entry.get("type") == "output"]
    if int(job["status"]) != 70 or job.get("stopreq") or not outputs:
        raise DemoError(
            f"job {job['jobId']} ended with status {job['status']} {job['statusText'].strip()},"
            f" stopreq {job.get('stopreq')}, and no output to download"
        )
    index = outputs[0]
    query = {"index": index, "jobId": job["jobId"], "owner": provider.owner, **provider.signed(job["jobId"])}
    response = service.call("GET", "/getResult", params=query)
    if response.status_code != 200:
        raise DemoError(f"getResult answered {response.status_code}: {response.text.strip()[:500]}")
    target = _free_name(folder, Path(str(results[index].get("filename") or "result")).name)
    target.write_bytes(response.content)
    return target


def _free_name(folder: Path, name: str) -> Path:
    """`name` in `folder`, or name-1, name-2, ... if it is taken: never overwrite a file."""
    stem, suffix = os.path.splitext(name)
    candidates = itertools.chain([name], (f"{stem}-{n}{suffix}" for n in itertools.count(1)))
    return next(folder / candidate for candidate in candidates if not (folder / candidate).exists())


def run(url: str, environment: str | None, timeout: float, out: TextIO) -> Path:
    deadline = time.monotonic() + timeout
    service = Service(url)
    server, input_url = serve_sample()
    try:
        provider = new_provider()
        chosen = wait_for_environment(service, environment, deadline, out)
        job_id = submit(service, provider, chosen, input_url)
        out.write(f"submitted job {job_id} (input {input_url}, {SAMPLE_LINES} lines)\n")
        job = follow(service, provider, job_id, deadline, out)
        return download(service, provider, job, Path.cwd())
    finally:
        server.shutdown()
        server.server_close()


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
