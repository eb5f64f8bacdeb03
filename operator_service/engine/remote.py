"""Fetching `remote` inputs and algorithms, as Ocean's pod-configuration does.

The Ocean Provider names a dataset (and an algorithm published as an asset) by DID, order
transaction and service id, never by URL. For such an asset the engine:

1. resolves its DDO from the metadata cache that stage 0's `output.metadataUri` names
   (GET <metadataUri>/api/aquarius/assets/ddo/<did>) and saves it as ddos/<did without did:op:>;
2. finds the DDO's service whose `id` is the workflow's `serviceId`; its `serviceEndpoint`
   is the Provider that serves the files;
3. asks that Provider for its routes (GET <provider>/ answers `serviceEndpoints`, a name ->
   [METHOD, path] map) and uses `fileinfo` and `download`;
4. lists the asset's files (fileinfo with {"did", "serviceId"}: one entry per file);
5. downloads each file i with `download`, signed by the operator's key: the signature is
   an Ethereum personal-message signature over keccak256(did + nonce), `consumerAddress` is
   the key's checksummed address (the address the engine announces, which the order was
   made for) and the nonce is milliseconds since the epoch. The user's `userdata` (for an
   algorithm: `algouserdata`) travels as URL-encoded JSON.

Downloads have the limits of url inputs (size and time, through fetch.download); the JSON
answers (DDO, routes, file list) the same time limit, and at most MAX_JSON_BYTES whatever
the input size limit (a DDO is not an input). Every step
is logged through `log`, never a signature, a nonce-bearing URL or a key.

Where this differs from pod-configuration, on purpose:
- URLs are joined with exactly one slash (pod-configuration doubles it when a Provider's
  serviceEndpoint ends with "/", and relies on the Provider to redirect);
- userdata is URL-encoded in full (pod-configuration's encodeURI leaves "&" and "=" as they
  are, which cuts the query);
- an algorithm's user data is taken from `algouserdata`, else `userData` (the key the
  Provider 2.x actually writes into an algorithm's `remote`), else `userdata`;
- a Provider that lists no file, or more than MAX_FILES, fails the asset (pod-configuration
  would report success with no data);
- downloads from one Provider start one at a time in this process, each with a nonce newer
  than the last: the Provider refuses a nonce older than the newest it has accepted from an
  address, and jobs fetch in parallel threads.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import requests
from eth_keys.datatypes import PrivateKey

from operator_service.engine.fetch import (
    CHUNK_BYTES,
    FetchError,
    FetchLimits,
    HttpStatusError,
    describe,
    download,
    timeouts,
)
from operator_service.engine.workspace import Workspace
from operator_service.model.personal_sign import sign_message

Log = Callable[[str], None]

DID_PATTERN = re.compile(r"^did:op:[0-9A-Za-z]{1,128}$")
DDO_PATH = "/api/aquarius/assets/ddo/"
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_FILES = 1000
REASON_CHARS = 300
# The keys of a workflow item's `remote` that carry user data, the first present one wins.
INPUT_USERDATA_KEYS = ("userdata",)
ALGORITHM_USERDATA_KEYS = ("algouserdata", "userData", "userdata")
# Runs of 128+ hex digits (a signature has 130) are never logged, even when a Provider echoes them.
LONG_HEX = re.compile(r"(0x)?[0-9a-fA-F]{128,}")
URL_QUERY = re.compile(r"(https?://[^\s?#]*)[?#]\S*")


class RemoteError(FetchError):
    """A remote asset that cannot be fetched; the message names the step and the reason."""


class DownloadRefused(RemoteError):
    """The Provider answered a signed download with an error (signature, consumer, order, file)."""


@dataclass(frozen=True)
class RemoteAsset:
    """What a workflow item with `remote` names: the asset, its order and its service."""

    did: str
    tx_id: str
    service_id: str | int
    userdata: Any = None

    @property
    def folder_name(self) -> str:
        return self.did.removeprefix("did:op:")


@dataclass(frozen=True)
class RemoteAccess:
    """Where DDOs come from, and the key that signs downloads (the operator's)."""

    metadata_uri: str
    key: PrivateKey = field(repr=False)

    @property
    def consumer(self) -> str:
        return self.key.public_key.to_checksum_address()


@dataclass(frozen=True)
class Route:
    method: str
    path: str


@dataclass(frozen=True)
class ProviderRoutes:
    fileinfo: Route
    download: Route


def remote_access(stage: dict, key: PrivateKey) -> RemoteAccess:
    """The metadata cache of stage 0's `output.metadataUri`, with the operator's key."""
    output = stage.get("output")
    uri = output.get("metadataUri") if isinstance(output, dict) else None
    if not isinstance(uri, str) or not _is_http_url(uri):
        raise RemoteError(f"output.metadataUri {uri!r:.200} is not an http(s) URL of a metadata cache")
    return RemoteAccess(uri, key)


def remote_asset(item: dict, algorithm: bool = False) -> RemoteAsset:
    """Read a workflow input (or algorithm) that carries `remote`; RemoteError if it cannot be used."""
    remote = item.get("remote")
    if not isinstance(remote, dict):
        raise RemoteError("it has no remote section")
    did = item.get("id")
    if not isinstance(did, str) or not DID_PATTERN.match(did):
        raise RemoteError(f"id {did!r:.100} is not a did:op: DID")
    tx_id = remote.get("txId")
    if not isinstance(tx_id, str) or not tx_id:
        raise RemoteError(f"remote.txId of {did} is missing: without an order the Provider serves nothing")
    service_id = remote.get("serviceId")
    if isinstance(service_id, bool) or not isinstance(service_id, (str, int)) or service_id == "":
        raise RemoteError(f"remote.serviceId of {did} is missing")
    names = ALGORITHM_USERDATA_KEYS if algorithm else INPUT_USERDATA_KEYS
    userdata = next((remote[name] for name in names if remote.get(name)), None)
    return RemoteAsset(did, tx_id, service_id, userdata)


def fetch_input(
    workspace: Workspace, item: dict, access: RemoteAccess, limits: FetchLimits, stop: threading.Event, log: Log
) -> int:
    """Fetch a remote input's files into inputs/<did without did:op:>/<i>; the number of files."""
    asset = remote_asset(item)
    folder = workspace.inputs / asset.folder_name
    folder.mkdir(mode=0o755, exist_ok=True)
    return fetch_files(asset, access, workspace.data, lambda i: f"inputs/{asset.folder_name}/{i}", limits, stop, log)


def fetch_algorithm(
    workspace: Workspace, algorithm: dict, access: RemoteAccess, limits: FetchLimits, stop: threading.Event, log: Log
) -> int:
    """Fetch a remote algorithm: file 0 to transformations/algorithm, any other i to transformations/<i>."""
    asset = remote_asset(algorithm, algorithm=True)
    return fetch_files(asset, access, workspace.data, _algorithm_file, limits, stop, log)


def _algorithm_file(index: int) -> str:
    return "transformations/algorithm" if index == 0 else f"transformations/{index}"


def fetch_files(
    asset: RemoteAsset,
    access: RemoteAccess,
    data: Path,
    target: Callable[[int], str],
    limits: FetchLimits,
    stop: threading.Event,
    log: Log,
) -> int:
    """The five steps for one asset, into `data` (the job's /data); `target(i)` names file i
    relative to it. Returns the number of files; RemoteError (a FetchError) on any failure."""
    ddo = resolve_ddo(asset.did, access.metadata_uri, limits, stop, log)
    (data / "ddos" / asset.folder_name).write_text(json.dumps(ddo))
    log(f"DDO saved to ddos/{asset.folder_name}")
    provider = service_endpoint(ddo, asset)
    log(f"Service {asset.service_id!r} of {asset.did} is served by the Provider at {describe(provider)}")
    routes = provider_routes(_json_call("GET", provider, None, limits, stop, "the Provider's routes"))
    log(
        f"Provider routes: fileinfo {routes.fileinfo.method} {routes.fileinfo.path},"
        f" download {routes.download.method} {routes.download.path}"
    )
    count = list_files(provider, routes.fileinfo, asset, limits, stop)
    log(f"The Provider lists {count} file(s) for {asset.did}")
    for index in range(count):
        log(
            f"Downloading file {index} of {asset.did} as consumer {access.consumer}"
            + (" with userdata" if asset.userdata else "")
        )
        size = download_file(provider, routes.download, asset, index, access, data / target(index), limits, stop)
        log(f"Downloaded {size} bytes to {target(index)}")
    return count


def resolve_ddo(did: str, metadata_uri: str, limits: FetchLimits, stop: threading.Event, log: Log) -> dict:
    url = join_url(metadata_uri, DDO_PATH + quote(did, safe=":"))
    log(f"Resolving the DDO of {did} from {describe(url)}")
    ddo = _json_call("GET", url, None, limits, stop, f"the DDO of {did}")
    if not isinstance(ddo, dict):
        raise RemoteError(f"the DDO of {did}: {describe(url)} answered JSON that is not a DDO")
    return ddo


def service_endpoint(ddo: dict, asset: RemoteAsset) -> str:
    """The serviceEndpoint (the Provider's base URL) of the DDO's service `asset.service_id`."""
    services = ddo.get("services")
    if not isinstance(services, list):
        raise RemoteError(f"the DDO of {asset.did} has no services list")
    for service in services:
        if isinstance(service, dict) and service.get("id") == asset.service_id:
            endpoint = service.get("serviceEndpoint")
            if not isinstance(endpoint, str) or not _is_http_url(endpoint):
                raise RemoteError(f"service {asset.service_id!r} of {asset.did} has no http(s) serviceEndpoint")
            return endpoint
    known = ", ".join(repr(s.get("id")) for s in services if isinstance(s, dict))
    raise RemoteError(
        f"service {asset.service_id!r} is not in the DDO of {asset.did} (its services: {known or 'none'})"
    )


def provider_routes(answer: Any) -> ProviderRoutes:
    """`fileinfo` and `download` from the `serviceEndpoints` of a Provider's GET / answer."""
    endpoints = answer.get("serviceEndpoints") if isinstance(answer, dict) else None
    if not isinstance(endpoints, dict):
        raise RemoteError("the Provider's routes: its answer has no serviceEndpoints")
    fileinfo = _route(endpoints, "fileinfo", ("GET", "POST"))
    return ProviderRoutes(fileinfo, _route(endpoints, "download", ("GET",)))


def _route(endpoints: dict, name: str, methods: tuple[str, ...]) -> Route:
    entry = endpoints.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise RemoteError(f"the Provider's routes: no {name} route among its serviceEndpoints")
    method, path = entry[0].upper(), entry[1]
    if method not in methods:
        raise RemoteError(f"the Provider's routes: {name} is {method}, expected {' or '.join(methods)}")
    return Route(method, path)


def list_files(provider: str, route: Route, asset: RemoteAsset, limits: FetchLimits, stop: threading.Event) -> int:
    """How many files the Provider serves for the asset's service (fileinfo: one entry per file)."""
    body = {"did": asset.did, "serviceId": asset.service_id}
    answer = _json_call(route.method, join_url(provider, route.path), body, limits, stop, f"the files of {asset.did}")
    if not isinstance(answer, list):
        raise RemoteError(f"the files of {asset.did}: the Provider's fileinfo answer is not a list")
    if not answer:
        raise RemoteError(f"the files of {asset.did}: the Provider lists none")
    if len(answer) > MAX_FILES:
        raise RemoteError(f"the files of {asset.did}: the Provider lists {len(answer)}, more than {MAX_FILES}")
    return len(answer)


def download_file(
    provider: str,
    route: Route,
    asset: RemoteAsset,
    index: int,
    access: RemoteAccess,
    target: Path,
    limits: FetchLimits,
    stop: threading.Event,
) -> int:
    """Download file `index` with a freshly signed request; the number of bytes written."""
    base = join_url(provider, route.path)
    with _Turn(provider, access.consumer, limits, stop) as turn:
        nonce = _next_nonce()
        signature = download_signature(access.key, asset.did, nonce)
        url = base + "?" + download_query(asset, index, access.consumer, nonce, signature)
        try:
            return download(url, target, limits, stop, on_answer=turn.end)
        except HttpStatusError as exc:
            reason = provider_reason(exc.body, (signature,))
            message = f"file {index} of {asset.did}: the Provider refused: HTTP {exc.status}: {reason}"
            raise DownloadRefused(message) from None
        except FetchError as exc:
            raise RemoteError(f"file {index} of {asset.did}: {exc}") from None


def download_signature(key: PrivateKey, did: str, nonce: int) -> str:
    """What the Provider's download route checks: a personal-message signature over
    keccak256(did + nonce), with v as 27/28 (web3's accounts.sign, which pod-configuration uses)."""
    raw = bytes.fromhex(sign_message(key.to_hex(), f"{did}{nonce}").removeprefix("0x"))
    return "0x" + (raw[:64] + bytes([raw[64] + 27])).hex()


def download_query(asset: RemoteAsset, index: int, consumer: str, nonce: int, signature: str) -> str:
    """The download route's query, in pod-configuration's order; userdata as compact JSON."""
    params = [
        ("fileIndex", str(index)),
        ("documentId", asset.did),
        ("transferTxId", asset.tx_id),
        ("serviceId", str(asset.service_id)),
        ("consumerAddress", consumer),
        ("nonce", str(nonce)),
        ("signature", signature),
    ]
    if asset.userdata:
        params.append(("userdata", json.dumps(asset.userdata, separators=(",", ":"))))
    return urlencode(params)


def provider_reason(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """One line from an error answer: its `error` (or `errors`, `message`), without signatures,
    `secrets` or URL queries, at most REASON_CHARS long."""
    text = body.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        for name in ("error", "errors", "message"):
            if answer.get(name):
                value = answer[name]
                text = value if isinstance(value, str) else json.dumps(value)
                break
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    text = URL_QUERY.sub(r"\1", LONG_HEX.sub("<redacted>", text))
    line = " ".join(text.split()) or "(no reason given)"
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlparse(value)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _json_call(method: str, url: str, body: dict | None, limits: FetchLimits, stop: threading.Event, what: str) -> Any:
    """One JSON request under the fetch limits (time, and at most MAX_JSON_BYTES)."""
    try:
        with requests.request(method, url, json=body, stream=True, timeout=timeouts(limits)) as response:
            data = _read_bounded(response, limits, stop, f"{what}: {describe(url)}")
            status = response.status_code
    except requests.Timeout:
        raise RemoteError(f"{what}: {describe(url)}: nothing received for {timeouts(limits)[1]:g} s") from None
    except requests.RequestException as exc:
        raise RemoteError(f"{what}: {describe(url)}: {exc.__class__.__name__}") from None
    if status != 200:
        raise RemoteError(f"{what}: {describe(url)} answered HTTP {status}: {provider_reason(data)}")
    try:
        return json.loads(data)
    except ValueError:
        raise RemoteError(f"{what}: {describe(url)} answered something that is not JSON") from None


def _read_bounded(response: requests.Response, limits: FetchLimits, stop: threading.Event, what: str) -> bytes:
    deadline = time.monotonic() + limits.total_seconds
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise RemoteError(f"{what}: the answer is more than {MAX_JSON_BYTES} bytes")
        if time.monotonic() > deadline:
            raise RemoteError(f"{what}: not complete after {limits.total_seconds:g} s")
        if stop.is_set():
            raise RemoteError(f"{what}: the engine is stopping")
        chunks.append(chunk)
    return b"".join(chunks)


_nonce_lock = threading.Lock()
_last_nonce = 0
_turns_lock = threading.Lock()
_turns: dict[tuple[str, str], threading.Lock] = {}
TURN_POLL_SECONDS = 0.2


def _next_nonce() -> int:
    """Milliseconds since the epoch, and always more than the last nonce this process used."""
    global _last_nonce
    with _nonce_lock:
        _last_nonce = max(int(time.time() * 1000), _last_nonce + 1)
        return _last_nonce


class _Turn:
    """One signed download at a time per (Provider, consumer) in this process, from signing until
    the Provider has answered: by then it has recorded the nonce, so the next one is newer."""

    def __init__(self, provider: str, consumer: str, limits: FetchLimits, stop: threading.Event):
        with _turns_lock:
            self._lock = _turns.setdefault((provider.rstrip("/"), consumer), threading.Lock())
        self._provider = provider
        self._limits = limits
        self._stop = stop
        self._held = False

    def __enter__(self) -> _Turn:
        deadline = time.monotonic() + self._limits.total_seconds
        while not self._lock.acquire(timeout=TURN_POLL_SECONDS):
            if self._stop.is_set():
                raise RemoteError("the engine is stopping")
            if time.monotonic() > deadline:
                raise RemoteError(
                    f"another download from {describe(self._provider)} did not get its answer"
                    f" within {self._limits.total_seconds:g} s"
                )
        self._held = True
        return self

    def end(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __exit__(self, *exc_info: Any) -> None:
        self.end()
