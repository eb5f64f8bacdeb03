"""Remote inputs and algorithms (engine/remote.py) against a faked metadata cache and Provider
(tests/fake_ocean.py) that check signatures, nonces and orders as the real ones do.

Jobs are stage 0 as the Provider builds it (`provider_stage`). Every failure must be a
FetchError with a one-line reason naming the step, leave no partial file behind, and never
put a signature, a signed URL or the key into what was logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import requests
from eth_hash.auto import keccak
from eth_keys import keys

from operator_service.engine.fetch import FetchError, FetchLimits
from operator_service.engine.remote import (
    MAX_FILES,
    RemoteAsset,
    RemoteError,
    download_query,
    download_signature,
    fetch_algorithm,
    fetch_input,
    provider_reason,
    provider_routes,
    remote_access,
    remote_asset,
)
from operator_service.engine.workspace import Workspace, create
from tests.fake_ocean import FakeFile, FakeOcean, Order, Purchase, provider_stage

LIMITS = FetchLimits(max_bytes=64 * 1024, total_seconds=30.0)
SLOW_LIMITS = FetchLimits(max_bytes=64 * 1024, total_seconds=2.0)  # it covers the slow download alone
CODE = b"import os\nprint(sorted(os.listdir('/data/inputs')))\n"


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def operator() -> keys.PrivateKey:
    return keys.PrivateKey(os.urandom(32))


@pytest.fixture
def ocean(fake_ocean: FakeOcean, operator) -> FakeOcean:
    """The fakes, with the operator's address known as a compute environment's consumer."""
    fake_ocean.provider.allow_compute_consumer(operator.public_key.to_checksum_address())
    return fake_ocean


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    folder = Workspace(tmp_path / "job")
    create(folder, None, None)
    return folder


@pytest.fixture
def log() -> Log:
    return Log()


def bought(ocean: FakeOcean, operator, files: list[FakeFile], **publish) -> Purchase:
    """An asset published on the fake Provider and ordered for the operator's address."""
    asset = ocean.publish(files, **publish)
    return ocean.order(asset, operator.public_key.to_checksum_address(), payer="0x" + "ab" * 20)


def assert_nothing_secret(log: Log, ocean: FakeOcean, operator, message: str = "") -> None:
    text = log.text + "\n" + message
    assert operator.to_hex().removeprefix("0x") not in text.lower()
    for query in ocean.provider.downloads:
        assert query["signature"].removeprefix("0x") not in text
    assert "signature=" not in text and "nonce=" not in text


def fetch_one_input(workspace, stage, operator, log, limits=LIMITS) -> int:
    access = remote_access(stage, operator)
    return fetch_input(workspace, stage["input"][0], access, limits, threading.Event(), log)


def test_a_provider_shaped_job_gets_every_file_its_ddo_and_the_users_data(ocean, operator, workspace, log):
    first = bought(ocean, operator, [FakeFile(b"a,b\n1,2\n"), FakeFile(b"second file", "notes.txt", "text/plain")])
    second = bought(ocean, operator, [FakeFile(b"x" * 10000)], service_endpoint=ocean.provider.url + "/")
    algorithm = bought(ocean, operator, [FakeFile(CODE, "algo.py", "text/x-python")], kind="algorithm")
    userdata = {"query": "a&b=c", "limit": 3}
    stage = provider_stage(
        ocean,
        [first, second],
        algorithm,
        userdata=[userdata, None],
        algouserdata={"depth": 2},
        algocustomdata={"threshold": 0.5},
    )
    access = remote_access(stage, operator)

    counts = [fetch_input(workspace, item, access, LIMITS, threading.Event(), log) for item in stage["input"]]
    assert fetch_algorithm(workspace, stage["algorithm"], access, LIMITS, threading.Event(), log) == 1

    assert counts == [2, 1]
    first_folder = workspace.inputs / first.asset.did.removeprefix("did:op:")
    assert (first_folder / "0").read_bytes() == b"a,b\n1,2\n"
    assert (first_folder / "1").read_bytes() == b"second file"
    assert (workspace.inputs / second.asset.did.removeprefix("did:op:") / "0").read_bytes() == b"x" * 10000
    assert workspace.algorithm.read_bytes() == CODE
    for purchase in (first, second, algorithm):
        saved = workspace.ddos / purchase.asset.did.removeprefix("did:op:")
        assert json.loads(saved.read_text()) == purchase.asset.ddo
    downloads = ocean.provider.downloads
    assert [(q["documentId"], q["fileIndex"]) for q in downloads] == [
        (first.asset.did, "0"),
        (first.asset.did, "1"),
        (second.asset.did, "0"),
        (algorithm.asset.did, "0"),
    ]
    assert {q["consumerAddress"] for q in downloads} == {operator.public_key.to_checksum_address()}
    assert [json.loads(q["userdata"]) if "userdata" in q else None for q in downloads] == [
        userdata,
        userdata,
        None,
        {"depth": 2},
    ]
    assert f"Downloaded 8 bytes to inputs/{first.asset.did.removeprefix('did:op:')}/0" in log
    assert f"Downloaded {len(CODE)} bytes to transformations/algorithm" in log
    assert_nothing_secret(log, ocean, operator)


def test_the_download_query_is_signed_as_the_provider_verifies_it(operator):
    asset = RemoteAsset("did:op:" + "ab" * 32, "0x" + "cd" * 32, "svc-1", {"q": "a&b=c #1"})
    consumer = operator.public_key.to_checksum_address()
    nonce = 1700000000123
    signature = download_signature(operator, asset.did, nonce)

    query = parse_qsl(download_query(asset, 2, consumer, nonce, signature))

    assert [name for name, _ in query] == [
        "fileIndex",
        "documentId",
        "transferTxId",
        "serviceId",
        "consumerAddress",
        "nonce",
        "signature",
        "userdata",
    ]
    values = dict(query)
    assert (values["fileIndex"], values["documentId"], values["transferTxId"], values["serviceId"]) == (
        "2",
        asset.did,
        asset.tx_id,
        "svc-1",
    )
    assert (values["consumerAddress"], values["nonce"], json.loads(values["userdata"])) == (
        consumer,
        str(nonce),
        {"q": "a&b=c #1"},
    )
    raw = bytes.fromhex(signature.removeprefix("0x"))
    assert len(raw) == 65 and raw[64] in (27, 28)
    signed = keccak(b"\x19Ethereum Signed Message:\n32" + keccak(f"{asset.did}{nonce}".encode()))
    recovered = keys.Signature(raw[:64] + bytes([raw[64] - 27])).recover_public_key_from_msg_hash(signed)
    assert recovered.to_checksum_address() == consumer
    assert "userdata" not in dict(
        parse_qsl(download_query(RemoteAsset(asset.did, asset.tx_id, 0), 0, consumer, nonce, signature))
    )


def test_the_routes_come_from_the_providers_service_endpoints(ocean):
    routes = provider_routes(requests.get(ocean.provider.url, timeout=10).json())
    assert (routes.fileinfo.method, routes.fileinfo.path) == ("POST", "/api/services/fileinfo")
    assert (routes.download.method, routes.download.path) == ("GET", "/api/services/download")
    for answer, reason in (
        ({}, "no serviceEndpoints"),
        ({"serviceEndpoints": {"fileinfo": ["POST", "/f"]}}, "no download route"),
        (
            {"serviceEndpoints": {"fileinfo": ["POST", "/f"], "download": ["POST", "/d"]}},
            "download is POST, expected GET",
        ),
    ):
        with pytest.raises(RemoteError, match=reason):
            provider_routes(answer)


@pytest.mark.parametrize(
    "item, reason",
    [
        ({"id": "did:op:" + "ab" * 32, "url": ["http://example.com/x"]}, "no remote section"),
        ({"id": "did:op:../../etc", "remote": {"txId": "0x1", "serviceId": "s"}}, "is not a did:op: DID"),
        ({"id": "did:op:" + "ab" * 32, "remote": {"serviceId": "s"}}, "remote.txId of did:op:abab.* is missing"),
        ({"id": "did:op:" + "ab" * 32, "remote": {"txId": "0x1", "serviceId": None}}, "remote.serviceId .* missing"),
    ],
)
def test_a_remote_item_that_names_no_order_or_service_is_refused_before_any_request(item, reason):
    with pytest.raises(RemoteError, match=reason):
        remote_asset(item)


@pytest.mark.parametrize("output", [{}, {"metadataUri": ""}, {"metadataUri": "file:///etc"}, None])
def test_a_stage_without_a_metadata_cache_url_is_refused(operator, output):
    with pytest.raises(RemoteError, match="output.metadataUri"):
        remote_access({"output": output}, operator)


def test_the_algorithms_user_data_may_come_under_any_of_its_three_names():
    base = {"id": "did:op:" + "ab" * 32}
    remote = {"txId": "0x1", "serviceId": "s", "userdata": {"from": "userdata"}}
    assert remote_asset({**base, "remote": remote}, algorithm=True).userdata == {"from": "userdata"}
    remote["userData"] = {"from": "userData"}
    assert remote_asset({**base, "remote": remote}, algorithm=True).userdata == {"from": "userData"}
    remote["algouserdata"] = {"from": "algouserdata"}
    assert remote_asset({**base, "remote": remote}, algorithm=True).userdata == {"from": "algouserdata"}
    assert remote_asset({**base, "remote": remote}).userdata == {"from": "userdata"}


def test_a_ddo_the_metadata_cache_does_not_have_fails_the_input(ocean, operator, workspace, log):
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    algorithm = bought(ocean, operator, [FakeFile(CODE)], kind="algorithm")
    ocean.aquarius.forget(dataset.asset.did)
    stage = provider_stage(ocean, [dataset], algorithm)

    with pytest.raises(FetchError) as failure:
        fetch_one_input(workspace, stage, operator, log)

    message = str(failure.value)
    assert message.startswith(f"the DDO of {dataset.asset.did}: ")
    assert f"HTTP 404: Asset DID {dataset.asset.did} not found in Elasticsearch." in message
    assert "\n" not in message
    assert list(workspace.ddos.iterdir()) == [] and ocean.provider.downloads == []
    assert_nothing_secret(log, ocean, operator, message)


def test_a_service_id_the_ddo_does_not_have_fails_the_input(ocean, operator, workspace, log):
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))
    stage["input"][0]["remote"]["serviceId"] = "no-such-service"

    with pytest.raises(
        FetchError,
        match=f"service 'no-such-service' is not in the DDO of {dataset.asset.did}"
        f" \\(its services: '{dataset.asset.service_id}'\\)",
    ):
        fetch_one_input(workspace, stage, operator, log)

    assert (workspace.ddos / dataset.asset.did.removeprefix("did:op:")).is_file()
    assert ocean.provider.downloads == []


def _nonce_ahead(ocean: FakeOcean, operator, dataset: Purchase) -> None:
    ocean.provider.remember_nonce(operator.public_key.to_checksum_address(), int(time.time() * 1000) + 10**9)


def _ordered_for_someone_else(ocean: FakeOcean, operator, dataset: Purchase) -> None:
    other = keys.PrivateKey(os.urandom(32)).public_key.to_checksum_address()
    ocean.provider.orders[dataset.tx_id] = Order(dataset.asset.did, dataset.asset.service_id, other, other)


def _not_a_compute_environment(ocean: FakeOcean, operator, dataset: Purchase) -> None:
    ocean.provider.c2d_consumers.clear()


@pytest.mark.parametrize(
    "refuse, reason",
    [
        (
            _nonce_ahead,
            r"HTTP 400: \{\"signature\": \"Invalid signature expected nonce \(\d+\) > current nonce \(\d+\)\.\"\}",
        ),
        (_ordered_for_someone_else, "HTTP 400: .*sender of order transaction is not the consumer/payer"),
        (_not_a_compute_environment, "HTTP 400: .*is not an access service"),
    ],
)
def test_a_provider_refusing_the_signed_download_fails_the_input_with_its_reason(
    ocean, operator, workspace, log, refuse, reason
):
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))
    refuse(ocean, operator, dataset)

    with pytest.raises(FetchError, match=f"file 0 of {dataset.asset.did}: the Provider refused: {reason}") as failure:
        fetch_one_input(workspace, stage, operator, log)

    assert "\n" not in str(failure.value)
    assert list((workspace.inputs / dataset.asset.did.removeprefix("did:op:")).iterdir()) == []
    assert len(ocean.provider.downloads) == 1
    assert_nothing_secret(log, ocean, operator, str(failure.value))


def test_a_file_over_the_size_limit_fails_the_input_and_leaves_nothing(ocean, operator, workspace, log):
    dataset = bought(ocean, operator, [FakeFile(b"small"), FakeFile(b"y" * 5000)])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))

    with pytest.raises(
        FetchError, match=f"file 1 of {dataset.asset.did}: .*/api/services/download: more than the limit of 1000 bytes"
    ) as failure:
        fetch_one_input(workspace, stage, operator, log, FetchLimits(max_bytes=1000, total_seconds=30))

    folder = workspace.inputs / dataset.asset.did.removeprefix("did:op:")
    assert [path.name for path in folder.iterdir()] == ["0"]
    assert_nothing_secret(log, ocean, operator, str(failure.value))


def test_a_provider_listing_too_many_files_fails_before_any_download(ocean, operator, workspace, log):
    dataset = bought(ocean, operator, [FakeFile(b"1")] * (MAX_FILES + 1))
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))

    with pytest.raises(FetchError, match=f"the Provider lists {MAX_FILES + 1}, more than {MAX_FILES}"):
        fetch_one_input(workspace, stage, operator, log)
    assert ocean.provider.downloads == []


@pytest.mark.parametrize("slow", ["trickle", "hang"])
def test_a_slow_provider_fails_the_input_at_the_time_limit(ocean, operator, workspace, log, slow):
    dataset = bought(ocean, operator, [FakeFile(b"z" * 32 * 1024)])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))
    if slow == "trickle":
        ocean.provider.trickle(chunk=256, pause=0.5)  # 64 s for the whole file
    else:
        ocean.provider.hang_downloads()

    with pytest.raises(
        FetchError,
        match=f"file 0 of {dataset.asset.did}: .*/api/services/download:"
        " (not complete after 2 s|nothing received for 2 s)",
    ) as failure:
        fetch_one_input(workspace, stage, operator, log, SLOW_LIMITS)

    assert list((workspace.inputs / dataset.asset.did.removeprefix("did:op:")).iterdir()) == []
    assert_nothing_secret(log, ocean, operator, str(failure.value))


def test_a_stopping_engine_fetches_nothing(ocean, operator, workspace, log):
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))
    stop = threading.Event()
    stop.set()

    with pytest.raises(FetchError, match="the engine is stopping"):
        fetch_input(workspace, stage["input"][0], remote_access(stage, operator), LIMITS, stop, log)
    assert ocean.provider.downloads == []


def test_parallel_jobs_fetching_from_one_provider_never_reuse_or_reorder_nonces(ocean, operator, tmp_path):
    """The Provider refuses a nonce older than the newest it accepted; jobs run in threads."""
    ocean.provider.order_check_seconds = 0.05
    purchases = [bought(ocean, operator, [FakeFile(f"{n}-{i}".encode()) for i in range(3)]) for n in range(3)]
    algorithm = bought(ocean, operator, [FakeFile(CODE)], kind="algorithm")
    errors: list[Exception] = []
    workspaces = [Workspace(tmp_path / f"job{n}") for n in range(3)]

    def job(n: int) -> None:
        create(workspaces[n], None, None)
        try:
            fetch_one_input(workspaces[n], provider_stage(ocean, [purchases[n]], algorithm), operator, Log())
        except FetchError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    for n, purchase in enumerate(purchases):
        folder = workspaces[n].inputs / purchase.asset.did.removeprefix("did:op:")
        assert [(folder / str(i)).read_bytes() for i in range(3)] == [f"{n}-{i}".encode() for i in range(3)]
    nonces = [int(q["nonce"]) for q in ocean.provider.downloads]
    assert len(nonces) == 9 and nonces == sorted(set(nonces))


def test_the_fake_provider_refuses_what_the_real_one_refuses(ocean, operator):
    """The fake is only worth testing against if it refuses: another key, an old nonce, a replay."""
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    consumer = operator.public_key.to_checksum_address()
    asset = RemoteAsset(dataset.asset.did, dataset.tx_id, dataset.asset.service_id)
    url = ocean.provider.url + "/api/services/download?"
    nonce = int(time.time() * 1000)
    intruder = keys.PrivateKey(os.urandom(32))

    forged_signature = download_signature(intruder, asset.did, nonce)
    forged = requests.get(url + download_query(asset, 0, consumer, nonce, forged_signature), timeout=10)
    assert forged.status_code == 400 and "Invalid signature" in forged.json()["errors"]["signature"]
    signed = url + download_query(asset, 0, consumer, nonce, download_signature(operator, asset.did, nonce))
    served = requests.get(signed, timeout=10)
    assert (served.status_code, served.content) == (200, b"data")
    replay = requests.get(signed, timeout=10)
    assert replay.status_code == 503 and "duplicates" in replay.json()["error"]
    older = nonce - 1
    stale_signature = download_signature(operator, asset.did, older)
    stale = requests.get(url + download_query(asset, 0, consumer, older, stale_signature), timeout=10)
    assert stale.status_code == 400 and f"current nonce ({older})" in stale.json()["errors"]["signature"]
    info = requests.post(
        ocean.provider.url + "/api/services/fileinfo", json={"did": dataset.asset.did, "serviceId": "nope"}, timeout=10
    )
    assert (info.status_code, info.json()) == (400, {"error": "Provider Ganache: Invalid serviceId."})


def test_a_refusal_is_reported_in_one_line_without_signatures_or_queries():
    signature = "0x" + "1f" * 65
    body = json.dumps(
        {
            "error": f"Invalid signature {signature} for\nethereum address 0xAbC, see"
            f" http://provider/api/services/download?signature={signature}&nonce=1",
            "context": {"signature": signature},
        }
    ).encode()
    reason = provider_reason(body, (signature,))
    assert "\n" not in reason and "1f1f" not in reason and "?" not in reason and "context" not in reason
    assert reason.startswith("Invalid signature <redacted> for ethereum address 0xAbC")
    assert provider_reason(b"") == "(no reason given)"
    assert len(provider_reason(b"x" * 5000)) == 300


def test_urllib3_debug_lines_name_the_download_without_its_signed_query(ocean, operator, workspace, log, caplog):
    """With LOG_LEVEL=DEBUG, urllib3 logs every request line; a signed download's query must not be in it."""
    dataset = bought(ocean, operator, [FakeFile(b"data")])
    stage = provider_stage(ocean, [dataset], bought(ocean, operator, [FakeFile(CODE)], kind="algorithm"))

    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        fetch_one_input(workspace, stage, operator, log)

    (query,) = ocean.provider.downloads
    assert '"GET /api/services/download HTTP/1.1" 200' in caplog.text
    assert query["signature"].removeprefix("0x") not in caplog.text
    assert "signature=" not in caplog.text and "nonce=" not in caplog.text
