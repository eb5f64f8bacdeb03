"""The configure stage: what pod-configuration does, into the job folder.

Every input's URLs (a list, or one string) are saved as inputs/<did>/0, 1, ...; then,
only if all inputs arrived, the algorithm: its rawcode when it has more than 10
characters (pod-configuration's rule), else its first URL, saved as
transformations/algorithm. `algocustomdata`, when present, goes to
inputs/algoCustomData.json. The result is 30, 31 (an input failed) or 32 (the
algorithm failed), and every step is written to adminlogs/configure.log.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from operator_service.engine.fetch import FetchError, FetchLimits, download
from operator_service.engine.workspace import Workspace
from operator_service.model.status import JobStatus
from operator_service.model.workflow import Stage, without_prefix

DID_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$")
MIN_RAWCODE_CHARS = 11

Log = Callable[[str], None]


class ProvisionError(Exception):
    """The job document itself makes provisioning impossible."""


def provision(workspace: Workspace, stage: Stage, limits: FetchLimits, stop: threading.Event, log: Log) -> JobStatus:
    log("========== Fetching input assets ============")
    for position, item in enumerate(stage.inputs):
        try:
            _fetch_input(workspace, position, item, limits, stop, log)
        except (FetchError, ProvisionError, OSError) as exc:
            log(f"Input {position} failed: {exc}")
            return JobStatus.DATA_FAILED
    log("========== Done with inputs, moving to algo ============")
    try:
        _write_algorithm(workspace, stage, limits, stop, log)
    except (FetchError, ProvisionError, OSError) as exc:
        log(f"Algorithm failed: {exc}")
        return JobStatus.ALGORITHM_FAILED
    log("========== Provisioning success ============")
    return JobStatus.PROVISIONED


def _urls(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _fetch_input(
    workspace: Workspace, position: int, item: dict, limits: FetchLimits, stop: threading.Event, log: Log
) -> None:
    did = without_prefix(item.get("id", ""))
    if not DID_FOLDER.match(did):
        raise ProvisionError(f"input id {item.get('id')!r:.100} cannot name a folder")
    urls = _urls(item.get("url"))
    if not urls:
        raise ProvisionError("it has no url (the local engine fetches url inputs only, not remote assets)")
    folder = workspace.inputs / did
    folder.mkdir(mode=0o755, exist_ok=True)
    log(f"Processing input {position} ({item.get('id')}): {len(urls)} file(s)")
    for index, url in enumerate(urls):
        size = download(url, folder / str(index), limits, stop)
        log(f"Downloaded {size} bytes to inputs/{did}/{index}")


def _write_algorithm(workspace: Workspace, stage: Stage, limits: FetchLimits, stop: threading.Event, log: Log) -> None:
    algorithm = stage.algorithm
    entrypoint = stage.container.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ProvisionError("it has no container entrypoint")
    if "algocustomdata" in algorithm:
        (workspace.inputs / "algoCustomData.json").write_text(json.dumps(algorithm["algocustomdata"]))
        log("AlgoCustomData saved to inputs/algoCustomData.json")
    rawcode = algorithm.get("rawcode")
    if isinstance(rawcode, str) and len(rawcode) >= MIN_RAWCODE_CHARS:
        data = rawcode.encode("utf-8")
        if len(data) > limits.max_bytes:
            raise ProvisionError(f"rawcode is {len(data)} bytes, more than the limit of {limits.max_bytes}")
        workspace.algorithm.write_bytes(data)
        log(f"Wrote algorithm code ({len(data)} bytes) to transformations/algorithm")
    else:
        urls = _urls(algorithm.get("url"))
        if not urls:
            raise ProvisionError("it has neither rawcode nor url")
        size = download(urls[0], workspace.algorithm, limits, stop)
        log(f"Downloaded algorithm ({size} bytes) to transformations/algorithm")
    workspace.algorithm.chmod(0o755)
