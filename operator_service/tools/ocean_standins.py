"""Stand-ins for Ocean's metadata cache (Aquarius) and Provider (v2.x), over real HTTP on 127.0.0.1.

`operator-service demo` runs a real order's workflow against them, and the tests build their
fakes on them (tests/fake_ocean.py). They answer as the real ones do wherever a client can
tell the difference:

Metadata cache, GET /api/aquarius/assets/ddo/<did>: the DDO (v4: id, version, chainId,
nftAddress, metadata, services[] with id, type, serviceEndpoint, datatokenAddress, timeout,
encrypted files, compute), or 404 {"error": "Asset DID <did> not found in Elasticsearch."}.

Provider, GET /: software, version, providerAddresses, chainIds and serviceEndpoints (every
route as name -> [METHOD, path]). POST /api/services/fileinfo {"did", "serviceId"}: one
entry per file of the service ({"index", "valid", "type", "contentLength", "contentType",
"filename"}); 400 {"error": "Cannot resolve DID"} or {"error": "Provider Ganache: Invalid
serviceId."}. GET /api/services/download checks, in the real one's order:
1. the query (documentId, serviceId, consumerAddress, transferTxId, fileIndex, a numeric
   nonce) and the signature: a nonce below the newest one accepted from consumerAddress is
   refused, and the signer recovered from the personal-message signature over
   keccak256(documentId + nonce) must be consumerAddress. A failure answers 400
   {"message": "Validation error", "errors": {...}, "success": false};
2. the DDO (400 "Cannot resolve DID"), then the service (an unknown serviceId makes the real
   one fail with 503 on None.type, and so does this one);
3. a compute service is downloadable only by a compute environment's consumerAddress (400
   "... is not an access service."): the real Provider reads those addresses from the
   environments of its operator-service, the stand-in from `allow_compute_consumer`;
4. the order: transferTxId must be an order of this asset's service whose consumer or payer
   is consumerAddress (400 "Order with tx_id ... could not be validated ...");
5. fileIndex (400 "No such fileIndex"; one past the end is an IndexError, 503, as in the real one);
6. the nonce is recorded, and a nonce equal to the recorded one is refused there (the real
   one's database refuses the duplicate: 503), so a replayed URL never downloads twice;
7. the file is streamed (chunked, no Content-Length, Content-Disposition attachment).
The chain is stood in for by `order()`, which records a startOrder transaction (asset,
service, consumer, payer). Signatures are checked with eth-keys and eth-hash, independently
of the engine's own signing code.

The Provider also signs its calls to operator-service (`signed`, `compute_request`) with its
key, as the real one does, so the same stand-in starts jobs and serves their files.

Not modelled: auth tokens, credentials and NFT states, provider fees and order expiry,
userdata sent on to the file's origin (it is only recorded in `downloads`), HEAD/OPTIONS,
the other routes (they answer 404 here).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from eth_hash.auto import keccak
from eth_keys import keys
from eth_keys.datatypes import PrivateKey
from eth_utils import to_checksum_address

from operator_service.domain.signatures import provider_message, sign_provider_message

CHAIN_ID = 8996
NETWORK = "Ganache"  # the Provider's name for chain 8996
PROVIDER_VERSION = "2.1.6"
DDO_PATH = "/api/aquarius/assets/ddo/"
SERVICES = "/api/services"
PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
CHUNK_BYTES = 4096
# What the Provider puts into every compute request: its own namespace and time, whatever
# the environment (the environment itself is the request's `environment`).
PROVIDER_COMPUTE = {"Instances": 1, "namespace": "ocean-compute", "maxtime": 3600}
PROVIDER_FEE_SECONDS = 3600
# Every route of Provider 2.1.6 as its GET / lists them (Flask endpoint name -> method, path).
ROUTES = {
    "createAuthToken": ("GET", "/createAuthToken"),
    "deleteAuthToken": ("DELETE", "/deleteAuthToken"),
    "initializeCompute": ("POST", "/initializeCompute"),
    "computeDelete": ("DELETE", "/compute"),
    "computeStop": ("PUT", "/compute"),
    "computeStatus": ("GET", "/compute"),
    "computeStart": ("POST", "/compute"),
    "computeResult": ("GET", "/computeResult"),
    "computeEnvironments": ("GET", "/computeEnvironments"),
    "validateContainer": ("POST", "/validateContainer"),
    "nonce": ("GET", "/nonce"),
    "fileinfo": ("POST", "/fileinfo"),
    "initialize": ("GET", "/initialize"),
    "download": ("GET", "/download"),
    "decrypt": ("POST", "/decrypt"),
    "encrypt": ("POST", "/encrypt"),
}
ALGORITHM_CONTAINER = {
    "entrypoint": "python3 $ALGO",
    "image": "oceanprotocol/algo_dockers",
    "tag": "python-branin",
    "checksum": "sha256:8221d20c1c16491d7d56b9657ea09082c0ee4a8ab1a6621fa720da58b09580e4",
}


@dataclass(frozen=True)
class AssetFile:
    content: bytes
    filename: str = "data.csv"
    content_type: str = "text/csv"


@dataclass(frozen=True)
class PublishedAsset:
    did: str
    service_id: str
    ddo: dict

    @property
    def service(self) -> dict:
        return next(s for s in self.ddo["services"] if s["id"] == self.service_id)


@dataclass(frozen=True)
class Order:
    did: str
    service_id: str
    consumer: str
    payer: str


@dataclass(frozen=True)
class Purchase:
    """An asset and the transaction of its order, as a compute request names them."""

    asset: PublishedAsset
    tx_id: str


class Refusal(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, message: str, **extra: Any) -> Refusal:
    return Refusal(status, {"error": message, **extra})


def _random_address() -> str:
    return to_checksum_address("0x" + os.urandom(20).hex())


#: How often a server's loop looks whether close() was called (serve_forever's default is 0.5 s).
CLOSE_POLL_SECONDS = 0.05


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; `url` is its base URL."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = owner  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": CLOSE_POLL_SECONDS}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, *args: Any) -> None:
        pass


class MetadataCache:
    """Aquarius: DDOs by DID."""

    def __init__(self) -> None:
        self.ddos: dict[str, dict] = {}
        self.server = _Server(_AquariusHandler, self)
        self.url = self.server.url

    def publish(self, ddo: dict) -> None:
        self.ddos[ddo["id"]] = ddo

    def close(self) -> None:
        self.server.close()


class _AquariusHandler(_JsonHandler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(DDO_PATH):
            self.send_json(404, {"error": "Not Found"})
            return
        did = unquote(path[len(DDO_PATH) :])
        ddo = self.owner.ddos.get(did)
        if ddo is None:
            self.send_json(404, {"error": f"Asset DID {did} not found in Elasticsearch."})
        else:
            self.send_json(200, ddo)


class Provider:
    """The Provider: serves the files of assets whose services name it, to whoever ordered them,
    and signs its calls to operator-service with its key."""

    def __init__(self, metadata: MetadataCache, key: PrivateKey | None = None):
        self.metadata = metadata
        self.key = key or PrivateKey(os.urandom(32))
        self.files: dict[tuple[str, str], list[AssetFile]] = {}
        self.orders: dict[str, Order] = {}
        self.c2d_consumers: set[str] = set()
        self.nonces: dict[str, str] = {}
        self.downloads: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._last_nonce = 0
        self.server = _Server(_ProviderHandler, self)
        self.url = self.server.url

    @property
    def address(self) -> str:
        return self.key.public_key.to_checksum_address()

    def allow_compute_consumer(self, address: str) -> None:
        """As if a compute environment announced `address` as its consumerAddress."""
        self.c2d_consumers.add(to_checksum_address(address))

    # Signing the calls to operator-service, as the real Provider does

    def signed(self, owner: str, job_id: str = "") -> dict[str, str]:
        """`nonce` (ns, newer at every call) and `providerSignature` over owner + jobId + nonce."""
        with self._lock:
            self._last_nonce = max(time.time_ns(), self._last_nonce + 1)
            nonce = str(self._last_nonce)
        signature = sign_provider_message(self.key.to_hex(), provider_message(owner, job_id, nonce))
        return {"nonce": nonce, "providerSignature": signature}

    # Routes

    def root(self) -> dict:
        return {
            "software": "Provider",
            "version": PROVIDER_VERSION,
            "providerAddresses": {str(CHAIN_ID): self.address},
            "chainIds": [CHAIN_ID],
            "serviceEndpoints": {name: [method, SERVICES + path] for name, (method, path) in ROUTES.items()},
        }

    def fileinfo(self, data: dict) -> list[dict]:
        did, service_id = str(data.get("did") or ""), str(data.get("serviceId") or "")
        if not did and not data.get("type"):
            raise Refusal(400, _validation({"did": ["The did field is required when type is not present."]}))
        ddo = self.metadata.ddos.get(did)
        if ddo is None:
            raise _error(400, "Cannot resolve DID")
        files = self.files.get((did, service_id)) if _service(ddo, data.get("serviceId")) else None
        if files is None:
            raise _error(400, f"Provider {NETWORK}: Invalid serviceId.")
        if not files:
            raise _error(400, f"Provider {NETWORK}: Unable to get dataset files")
        return [
            {
                "index": i,
                "valid": True,
                "type": "url",
                "contentLength": str(len(f.content)),
                "contentType": f.content_type,
                "filename": f.filename,
            }
            for i, f in enumerate(files)
        ]

    def check_download(self, query: dict[str, str]) -> AssetFile:
        """Everything the real download route checks before it streams; the file to stream."""
        self._validate_download(query)
        did, service_id = query["documentId"], query["serviceId"]
        consumer, tx_id = query["consumerAddress"], query["transferTxId"]
        ddo = self.metadata.ddos.get(did)
        if ddo is None:
            raise _error(400, "Cannot resolve DID")
        service = _service(ddo, service_id)
        if service is None:
            raise _error(503, "'NoneType' object has no attribute 'type'", context=query)
        if service["type"] != "access" and to_checksum_address(consumer) not in self.c2d_consumers:
            raise _error(400, f"Provider {NETWORK}: Service with index={service_id} is not an access service.")
        self.check_order(tx_id, did, service_id, consumer)
        files = self.files.get((did, service_id), [])
        try:
            index = int(query["fileIndex"])
            if index > len(files):
                raise _error(400, f"Provider {NETWORK}: No such fileIndex {index}")
            served = files[index]
        except (ValueError, IndexError) as exc:
            raise _error(503, str(exc), context=query) from None
        self._record_nonce(consumer, query["nonce"], query)
        return served

    def check_order(self, tx_id: str, did: str, service_id: str, consumer: str) -> None:
        prefix = f"Provider {NETWORK}: Order with tx_id {tx_id} could not be validated due to error: "
        order = self.orders.get(tx_id)
        if order is None:
            raise _error(400, prefix + f"Transaction with hash: '{tx_id}' not found.")
        if (order.did, order.service_id) != (did, service_id):
            raise _error(
                400, prefix + f"Provider {NETWORK}: Cannot find the event for the order transaction with tx id {tx_id}."
            )
        if to_checksum_address(consumer) not in (order.consumer, order.payer):
            raise _error(400, prefix + f"Provider {NETWORK}: sender of order transaction is not the consumer/payer.")

    def answers_download(self) -> bool:
        """Whether a download request gets an answer at all (the tests' fake may hold it)."""
        return True

    def pieces(self, content: bytes) -> Iterator[bytes]:
        """The chunks a file is streamed in (the tests' fake may slow them down)."""
        for start in range(0, len(content), CHUNK_BYTES):
            yield content[start : start + CHUNK_BYTES]

    def close(self) -> None:
        self.server.close()

    def _validate_download(self, query: dict[str, str]) -> None:
        errors: dict[str, Any] = {}
        for name in ("documentId", "serviceId", "consumerAddress", "transferTxId", "fileIndex", "nonce"):
            if not query.get(name):
                errors[name] = [f"The {name} field is required."]
        if "nonce" not in errors and not _numeric(query["nonce"]):
            errors["nonce"] = ["The nonce must be a number."]
        if not errors:
            problem = self._signature_problem(query)
            if problem:
                errors["signature"] = problem
        if errors:
            raise Refusal(400, _validation(errors))

    def _signature_problem(self, query: dict[str, str]) -> str | None:
        """The real Provider's verify_signature over (documentId, nonce) for consumerAddress."""
        owner, did, nonce = query["consumerAddress"], query["documentId"], query["nonce"]
        signature = query.get("signature")
        if not signature:
            return "Invalid signature provided. Please check the nonce or documentId."
        with self._lock:
            newest = self.nonces.get(_checksum_or_none(owner) or owner)
        if newest is not None and Decimal(nonce) < Decimal(newest):
            return f"Invalid signature expected nonce ({newest}) > current nonce ({nonce})."
        try:
            raw = bytes.fromhex(signature.removeprefix("0x"))
            if len(raw) == 65 and raw[64] in (27, 28):
                raw = raw[:64] + bytes([raw[64] - 27])
            recovered = keys.Signature(signature_bytes=raw).recover_public_key_from_msg_hash(
                keccak(PERSONAL_PREFIX + keccak(f"{did}{nonce}".encode()))
            )
        except Exception as exc:  # the real one reports whatever parsing or recovery raised
            return (
                f"Invalid signature {signature} for ethereum address {owner}, message {did}"
                f" and nonce {nonce}. Got {exc}"
            )
        if _checksum_or_none(owner) != recovered.to_checksum_address():
            return (
                f"Invalid signature 0x{raw.hex()} for ethereum address {owner}, message {did}"
                f" and nonce {nonce}. Got {recovered.to_address()}"
            )
        return None

    def _record_nonce(self, consumer: str, nonce: str, query: dict) -> None:
        address = to_checksum_address(consumer)
        with self._lock:
            if self.nonces.get(address) == nonce:
                raise _error(
                    503,
                    f"Cannot create duplicates in the database.\n Existing nonce: {nonce} vs. new nonce: {nonce}",
                    context=query,
                )
            self.nonces[address] = nonce


def _validation(errors: dict) -> dict:
    return {"message": "Validation error", "errors": errors, "success": False}


def _numeric(value: str) -> bool:
    try:
        Decimal(value)
    except InvalidOperation:
        return False
    return True


def _checksum_or_none(address: str) -> str | None:
    try:
        return to_checksum_address(address)
    except ValueError:
        return None


def _service(ddo: dict, service_id: Any) -> dict | None:
    return next((s for s in ddo.get("services", []) if s.get("id") == service_id), None)


class _ProviderHandler(_JsonHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/":
            self.send_json(200, self.owner.root())
        elif parts.path == SERVICES + "/download":
            self._download({k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()})
        else:
            self.send_json(404, {"error": "404 Not Found: not a route of this Provider stand-in"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != SERVICES + "/fileinfo":
            self.send_json(404, {"error": "404 Not Found: not a route of this Provider stand-in"})
            return
        try:
            data = json.loads(self.read_body() or b"{}")
            self.send_json(200, self.owner.fileinfo(data if isinstance(data, dict) else {}))
        except Refusal as refusal:
            self.send_json(refusal.status, refusal.body)

    def _download(self, query: dict[str, str]) -> None:
        provider: Provider = self.owner
        provider.downloads.append(query)
        if not provider.answers_download():
            self.close_connection = True
            return
        try:
            served = provider.check_download(query)
        except Refusal as refusal:
            self.send_json(refusal.status, refusal.body)
            return
        self._stream(served, provider)

    def _stream(self, served: AssetFile, provider: Provider) -> None:
        self.send_response(200)
        self.send_header("Content-Type", served.content_type)
        self.send_header("Content-Disposition", f"attachment;filename={served.filename}")
        self.send_header("Access-Control-Expose-Headers", "Content-Disposition")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for piece in provider.pieces(served.content):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up (a limit it enforces)
            return


@dataclass
class OceanStandIns:
    """A metadata cache and a Provider that knows it, with helpers that publish and order assets."""

    provider_key: PrivateKey | None = field(default=None, repr=False)
    aquarius: MetadataCache = field(init=False)
    provider: Provider = field(init=False)

    def __post_init__(self) -> None:
        self.aquarius = self.new_metadata_cache()
        self.provider = self.new_provider(self.aquarius, self.provider_key)

    def new_metadata_cache(self) -> MetadataCache:
        return MetadataCache()

    def new_provider(self, metadata: MetadataCache, key: PrivateKey | None) -> Provider:
        return Provider(metadata, key)

    @property
    def metadata_uri(self) -> str:
        return self.aquarius.url

    def publish(
        self,
        files: list[AssetFile],
        kind: str = "dataset",
        service_type: str = "compute",
        service_endpoint: str | None = None,
        name: str | None = None,
        container: dict | None = None,
    ) -> PublishedAsset:
        """Publish an asset with one service whose files this Provider serves; an algorithm
        runs in `container` (entrypoint, image, tag, checksum)."""
        nft_address = _random_address()
        did = "did:op:" + hashlib.sha256((nft_address + str(CHAIN_ID)).encode()).hexdigest()
        service_id = hashlib.sha256(os.urandom(16)).hexdigest()
        service: dict[str, Any] = {
            "id": service_id,
            "type": service_type,
            "name": f"{service_type} service",
            "datatokenAddress": _random_address(),
            "serviceEndpoint": service_endpoint or self.provider.url,
            "timeout": 0,
            "files": "0x04" + os.urandom(96).hex(),  # encrypted: only the Provider knows the files
        }
        if service_type == "compute":
            service["compute"] = {
                "allowRawAlgorithm": False,
                "allowNetworkAccess": True,
                "publisherTrustedAlgorithms": [],
                "publisherTrustedAlgorithmPublishers": [],
            }
        metadata: dict[str, Any] = {
            "created": "2023-01-01T00:00:00Z",
            "updated": "2023-01-01T00:00:00Z",
            "type": kind,
            "name": name or f"A {kind}",
            "description": f"A {kind} published on the stand-in metadata cache",
            "author": "operator-service",
            "license": "CC-BY",
        }
        if kind == "algorithm":
            metadata["algorithm"] = {
                "language": "python",
                "version": "0.1",
                "container": dict(container or ALGORITHM_CONTAINER),
            }
        ddo = {
            "@context": ["https://w3id.org/did/v1"],
            "id": did,
            "version": "4.1.0",
            "chainId": CHAIN_ID,
            "nftAddress": nft_address,
            "metadata": metadata,
            "services": [service],
            "nft": {
                "address": nft_address,
                "name": "Data NFT",
                "symbol": "DN",
                "state": 0,
                "owner": _random_address(),
                "created": "2023-01-01T00:00:00",
            },
            "datatokens": [
                {"address": service["datatokenAddress"], "name": "Datatoken", "symbol": "DT", "serviceId": service_id}
            ],
            "stats": {"orders": 0, "price": {"value": 0}},
            "purgatory": {"state": False},
        }
        self.aquarius.publish(ddo)
        self.provider.files[(did, service_id)] = list(files)
        return PublishedAsset(did, service_id, ddo)

    def order(self, asset: PublishedAsset, consumer: str, payer: str | None = None) -> Purchase:
        """Record a startOrder transaction for the asset's service, made out to `consumer`."""
        tx_id = "0x" + hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        consumer = to_checksum_address(consumer)
        self.provider.orders[tx_id] = Order(
            asset.did, asset.service_id, consumer, to_checksum_address(payer) if payer else consumer
        )
        return Purchase(asset, tx_id)

    def compute_request(self, stage: dict, owner: str, environment: str, agreement_id: str) -> dict:
        """The body the Provider POSTs to operator-service's /compute (its computeStart), signed
        by its key over owner + nonce: `agreement_id` is the order that paid the Provider's fee."""
        signed = self.provider.signed(owner)
        return {
            "workflow": {"stages": [stage]},
            "providerSignature": signed["providerSignature"],
            "agreementId": agreement_id,
            "owner": owner,
            "providerAddress": self.provider.address,
            "environment": environment,
            "validUntil": int(time.time()) + PROVIDER_FEE_SECONDS,
            "nonce": int(signed["nonce"]),
            "chainId": CHAIN_ID,
        }

    def close(self) -> None:
        self.provider.close()
        self.aquarius.close()


def provider_stage(
    ocean: OceanStandIns,
    datasets: list[Purchase],
    algorithm: Purchase,
    userdata: list[dict | None] | None = None,
    algouserdata: dict | None = None,
    algocustomdata: dict | None = None,
) -> dict:
    """Stage 0 of the workflow exactly as Provider 2.x builds it for a compute start with an
    algorithm published as an asset (its WorkflowValidator, InputItemValidator and
    StageAlgoSerializer): `remote` inputs, the algorithm's `remote` with `userData`, the
    `algocustomdata` key always there (null when none was given), and `output` holding only
    the metadata cache's URL."""
    inputs = []
    for index, purchase in enumerate(datasets):
        item: dict[str, Any] = {
            "index": index,
            "id": purchase.asset.did,
            "remote": {"txId": purchase.tx_id, "serviceId": purchase.asset.service_id},
        }
        if userdata and userdata[index]:
            item["remote"]["userdata"] = userdata[index]
        inputs.append(item)
    return {
        "index": 0,
        "input": inputs,
        "compute": dict(PROVIDER_COMPUTE),
        "algorithm": {
            "id": algorithm.asset.did,
            "rawcode": "",
            "container": algorithm.asset.ddo["metadata"]["algorithm"]["container"],
            "algouserdata": None,
            "remote": {
                "serviceEndpoint": algorithm.asset.service["serviceEndpoint"],
                "txId": algorithm.tx_id,
                "serviceId": algorithm.asset.service_id,
                "userData": algouserdata,
            },
            "algocustomdata": algocustomdata,
        },
        "output": {"metadataUri": ocean.metadata_uri},
    }
