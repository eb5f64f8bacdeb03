"""The configure stage: what pod-configuration does, into the job folder.

Each input is taken in pod-configuration's order of precedence: its `url` (a list, or one
string), saved as inputs/<did>/0, 1, ...; else its `remote` asset (a DID, an order and a
service id: what the Ocean Provider sends), fetched from the asset's Provider by remote.py
with downloads signed by the operator's key. Then, only if all inputs arrived, the
algorithm: its rawcode when it has more than 10 characters (pod-configuration's rule), else
its first URL, else its `remote` asset, saved as transformations/algorithm.
`algocustomdata`, when the key is present (null included), goes to
inputs/algoCustomData.json. The result is 30, 31 (an input failed) or 32 (the algorithm
failed), and every step is written to adminlogs/configure.log, never a key or a signature.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from operator_service.engine import remote
from operator_service.engine.fetch import FetchError, FetchLimits, describe, download
from operator_service.engine.settings import OperatorKey
from operator_service.engine.workspace import Workspace
from operator_service.model.status import JobStatus
from operator_service.model.workflow import Stage, without_prefix

DID_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
MIN_RAWCODE_CHARS = 11

Log = Callable[[str], None]


class ProvisionError(Exception):
    """The job document itself makes provisioning impossible."""


@dataclass(frozen=True)
class Provisioned:
    """30, 31 or 32; for a failure, the configure log's line saying what failed."""

    status: JobStatus
    failure: str = ""


def provision(
    workspace: Workspace,
    stage: Stage,
    limits: FetchLimits,
    stop: threading.Event,
    log: Log,
    operator: OperatorKey,
) -> Provisioned:
    return _Configure(workspace, stage, limits, stop, log, operator).run()


def _urls(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


class _Configure:
    def __init__(
        self,
        workspace: Workspace,
        stage: Stage,
        limits: FetchLimits,
        stop: threading.Event,
        log: Log,
        operator: OperatorKey,
    ):
        self.workspace = workspace
        self.stage = stage
        self.limits = limits
        self.stop = stop
        self.log = log
        self.operator = operator
        self._access: remote.RemoteAccess | None = None

    def run(self) -> Provisioned:
        log = self.log
        log("========== Fetching input assets ============")
        for position, item in enumerate(self.stage.inputs):
            try:
                self._fetch_input(position, item)
            except (FetchError, ProvisionError, OSError) as exc:
                return self._failed(JobStatus.DATA_FAILED, f"Input {position} failed: {exc}", exc)
        log("========== Done with inputs, moving to algo ============")
        try:
            self._write_algorithm()
        except (FetchError, ProvisionError, OSError) as exc:
            return self._failed(JobStatus.ALGORITHM_FAILED, f"Algorithm failed: {exc}", exc)
        log("========== Provisioning success ============")
        return Provisioned(JobStatus.PROVISIONED)

    def _failed(self, status: JobStatus, line: str, exc: Exception) -> Provisioned:
        self.log(line)
        self._explain(exc)
        return Provisioned(status, line)

    def _fetch_input(self, position: int, item: dict) -> None:
        did = without_prefix(item.get("id", ""))
        if not DID_FOLDER.match(did):
            raise ProvisionError(f"input id {item.get('id')!r:.100} cannot name a folder")
        urls = _urls(item.get("url"))
        if not urls and "remote" in item:
            self.log(f"Processing input {position} ({item.get('id')}): a remote asset, fetched from its Provider")
            remote.fetch_input(self.workspace, item, self._remote_access(), self.limits, self.stop, self.log)
            return
        if not urls:
            raise ProvisionError("it has neither url nor remote")
        folder = self.workspace.inputs / did
        folder.mkdir(mode=0o755, exist_ok=True)
        self.log(f"Processing input {position} ({item.get('id')}): {len(urls)} file(s)")
        for index, url in enumerate(urls):
            size = download(url, folder / str(index), self.limits, self.stop)
            self.log(f"Downloaded {size} bytes to inputs/{did}/{index}")

    def _write_algorithm(self) -> None:
        algorithm = self.stage.algorithm
        entrypoint = self.stage.container.get("entrypoint")
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise ProvisionError("it has no container entrypoint")
        if "algocustomdata" in algorithm:
            (self.workspace.inputs / "algoCustomData.json").write_text(json.dumps(algorithm["algocustomdata"]))
            self.log("AlgoCustomData saved to inputs/algoCustomData.json")
        rawcode = algorithm.get("rawcode")
        urls = _urls(algorithm.get("url"))
        if isinstance(rawcode, str) and len(rawcode) >= MIN_RAWCODE_CHARS:
            data = rawcode.encode("utf-8")
            if len(data) > self.limits.max_bytes:
                raise ProvisionError(f"rawcode is {len(data)} bytes, more than the limit of {self.limits.max_bytes}")
            self.workspace.algorithm.write_bytes(data)
            self.log(f"Wrote algorithm code ({len(data)} bytes) to transformations/algorithm")
        elif urls:
            size = download(urls[0], self.workspace.algorithm, self.limits, self.stop)
            self.log(f"Downloaded algorithm ({size} bytes) to transformations/algorithm")
        elif "remote" in algorithm:
            self.log(f"Processing the algorithm ({algorithm.get('id')}): a remote asset, fetched from its Provider")
            remote.fetch_algorithm(self.workspace, algorithm, self._remote_access(), self.limits, self.stop, self.log)
        else:
            raise ProvisionError("it has neither rawcode nor url nor remote")
        self.workspace.algorithm.chmod(0o755)

    def _remote_access(self) -> remote.RemoteAccess:
        """The metadata cache of stage 0 and the operator's key, checked once, at the first remote asset."""
        if self._access is None:
            self._access = remote.remote_access(self.stage.raw, self.operator.key)
            self.log(
                f"Remote assets: DDOs from the metadata cache at {describe(self._access.metadata_uri)};"
                f" downloads signed as consumer {self.operator.address} ({self.operator.origin()})"
            )
        return self._access

    def _explain(self, exc: Exception) -> None:
        """After a Provider refused a download: what it expects of the address the engine signs with."""
        if isinstance(exc, remote.DownloadRefused):
            self.log(
                f"The Provider serves a compute asset only to the consumerAddress of a compute environment it"
                f" knows, for an order made out to that address: this engine signs as {self.operator.address}"
                f" ({self.operator.origin()})"
            )
