"""Jobs as the Ocean Provider sends them, through the API, on the local engine.

Each job is the body the Provider 2.x POSTs to /compute (`compute_request` around
`provider_stage`): its datasets and its algorithm are `remote` assets of the fake metadata
cache and Provider (tests/fake_ocean.py), ordered for the consumerAddress the engine
announces in GET /environments, as a real order is. The engine runs sandboxed, as in the
other engine tests. Every outcome is checked from outside: statuses through the API, results
and the configure log through getResult, what the Provider served from its own records.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from eth_keys import keys

from operator_service.engine.settings import KEY_FILE
from tests.conftest import OWNER
from tests.engine_support import COMPUTE, Inputs, job_row, published, wait_finished
from tests.fake_ocean import FakeFile, FakeOcean, Purchase, provider_stage

ENVIRONMENTS = "/api/v1/operator/environments"
RESULT = "/api/v1/operator/getResult"
FINISH_SECONDS = 60.0

# Reports what the algorithm sees of its job: inputs, DDOs, algoCustomData and its own files.
REPORT = b"""
import json, os
volume, inputs = os.environ["VOLUME"], os.environ["INPUTS"]
dids = json.loads(os.environ["DIDS"])
def read(*path):
    with open(os.path.join(*path)) as handle:
        return handle.read()
ddos = os.path.join(volume, "ddos")
report = {
    "dids": dids,
    "transformation": os.environ["TRANSFORMATION_DID"],
    "files": {did: {name: read(inputs, did, name) for name in os.listdir(os.path.join(inputs, did))} for did in dids},
    "ddos": {name: json.loads(read(ddos, name))["id"] for name in os.listdir(ddos)},
    "custom": read(inputs, "algoCustomData.json"),
    "transformations": sorted(os.listdir(os.path.join(volume, "transformations"))),
}
with open(os.path.join(os.environ["OUTPUTS"], "report.json"), "w") as out:
    json.dump(report, out)
"""


def consumer_address(client, environment: str = "ocean-compute") -> str:
    """The address the engine announces: what the Provider knows it by, and orders are made out to."""
    (announced,) = [env for env in client.get(ENVIRONMENTS).get_json() if env["id"] == environment]
    return announced["consumerAddress"]


def buy(ocean: FakeOcean, consumer: str, files: list[FakeFile], **publish) -> Purchase:
    """An asset published and ordered for the compute environment's consumer, paid by the user."""
    return ocean.order(ocean.publish(files, **publish), consumer, payer=OWNER)


def submit_as_provider(client, ocean: FakeOcean, stage: dict, environment: str = "ocean-compute") -> str:
    """POST the Provider's computeStart body, as it sends it (a JSON string); the job id."""
    body = ocean.compute_request(stage, OWNER, environment, agreement_id=stage["input"][0]["remote"]["txId"])
    response = client.post(COMPUTE, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    (job,) = response.get_json()
    assert (job["status"], job["statusText"]) == (1, "Warming up")
    return job["jobId"]


def result(client, ocean: FakeOcean, job_id: str, index: int, **headers):
    query = {"index": index, "jobId": job_id, "owner": OWNER, **ocean.provider.signed(OWNER, job_id)}
    return client.get(RESULT, query_string=query, headers=headers)


def published_index(client, ocean: FakeOcean, job_id: str, kind: str) -> int:
    query = {"jobId": job_id, "owner": OWNER, **ocean.provider.signed(OWNER, job_id)}
    (status,) = client.get(COMPUTE, query_string=query).get_json()
    (index,) = [i for i, entry in enumerate(status["results"]) if entry["type"] == kind]
    return index


def configure_log(client, ocean: FakeOcean, job_id: str) -> str:
    """The job's configure log, as its owner downloads it."""
    response = result(client, ocean, job_id, published_index(client, ocean, job_id, "configrationLog"))
    assert response.status_code == 200
    return response.get_data(as_text=True)


def assert_no_secret(log: str, ocean: FakeOcean, key_hex: str) -> None:
    assert key_hex.removeprefix("0x").lower() not in log.lower()
    for query in ocean.provider.downloads:
        assert query["signature"].removeprefix("0x") not in log
    assert "signature=" not in log and "nonce=" not in log


@pytest.mark.parametrize("configured_key", [True, False], ids=["OPERATOR_PRIVATE_KEY", "generated key"])
def test_a_job_as_the_provider_builds_it_runs_to_70_and_its_results_download(
    client, db, fake_ocean, start_engine, configured_key
):
    key = keys.PrivateKey(os.urandom(32))
    engine = start_engine(private_key=key.to_hex() if configured_key else None)
    consumer = consumer_address(client)
    key_hex = key.to_hex() if configured_key else (engine.config.work_dir / KEY_FILE).read_text().strip()
    assert consumer == keys.PrivateKey(bytes.fromhex(key_hex.removeprefix("0x"))).public_key.to_checksum_address()
    fake_ocean.provider.allow_compute_consumer(consumer)
    first = buy(fake_ocean, consumer, [FakeFile(b"a,b\n1,2\n"), FakeFile(b"notes", "notes.txt", "text/plain")])
    second = buy(fake_ocean, consumer, [FakeFile(b"x" * 5000)])
    algorithm = buy(fake_ocean, consumer, [FakeFile(REPORT, "report.py", "text/x-python")], kind="algorithm")
    custom = {"threshold": 0.5} if configured_key else None  # the Provider sends the key, null when none was given
    stage = provider_stage(
        fake_ocean,
        [first, second],
        algorithm,
        userdata=[{"rows": 2}, None],
        algouserdata={"depth": 3},
        algocustomdata=custom,
    )

    job_id = submit_as_provider(client, fake_ocean, stage)
    seen = {job_row(db, job_id)["status"]}
    row = wait_finished(db, job_id, FINISH_SECONDS)
    seen.add(row["status"])

    assert (row["status"], row["statusText"], row["stopreq"]) == (70, "Job finished", 0), configure_log(
        client, fake_ocean, job_id
    )
    assert seen <= {1, 20, 30, 40, 60, 70}
    query = {"jobId": job_id, "owner": OWNER, **fake_ocean.provider.signed(OWNER, job_id)}
    (status,) = client.get(COMPUTE, query_string=query).get_json()
    assert (status["status"], status["algoDID"], status["inputDID"]) == (
        70,
        algorithm.asset.did,
        [first.asset.did, second.asset.did],
    )
    response = result(client, fake_ocean, job_id, published_index(client, fake_ocean, job_id, "output"))
    assert response.status_code == 200
    report = json.loads(response.get_data())
    first_folder, second_folder = (p.asset.did.removeprefix("did:op:") for p in (first, second))
    assert report["dids"] == [first_folder, second_folder]
    assert report["transformation"] == algorithm.asset.did
    assert report["files"] == {first_folder: {"0": "a,b\n1,2\n", "1": "notes"}, second_folder: {"0": "x" * 5000}}
    assert report["ddos"] == {p.asset.did.removeprefix("did:op:"): p.asset.did for p in (first, second, algorithm)}
    assert json.loads(report["custom"]) == custom
    assert report["transformations"] == ["algorithm"]
    downloads = fake_ocean.provider.downloads
    assert [(q["documentId"], q["fileIndex"], q["consumerAddress"]) for q in downloads] == [
        (first.asset.did, "0", consumer),
        (first.asset.did, "1", consumer),
        (second.asset.did, "0", consumer),
        (algorithm.asset.did, "0", consumer),
    ]
    assert [json.loads(q.get("userdata", "null")) for q in downloads] == [{"rows": 2}, {"rows": 2}, None, {"depth": 3}]
    log = configure_log(client, fake_ocean, job_id)
    assert f"DDO saved to ddos/{first_folder}" in log
    assert f"Downloaded 5000 bytes to inputs/{second_folder}/0" in log
    assert f"Downloaded {len(REPORT)} bytes to transformations/algorithm" in log
    assert f"downloads signed as consumer {consumer}" in log
    assert ("OPERATOR_PRIVATE_KEY is not set" in log) is not configured_key
    assert_no_secret(log, fake_ocean, key_hex)
    part = result(client, fake_ocean, job_id, published_index(client, fake_ocean, job_id, "output"), Range="bytes=0-9")
    assert (part.status_code, part.get_data()) == (206, response.get_data()[:10])


def test_a_url_input_is_downloaded_as_before_beside_remote_ones(client, db, fake_ocean, start_engine, inputs):
    start_engine()
    consumer = consumer_address(client)
    fake_ocean.provider.allow_compute_consumer(consumer)
    remote_one = buy(fake_ocean, consumer, [FakeFile(b"remote data")])
    algorithm = buy(fake_ocean, consumer, [FakeFile(REPORT, "report.py", "text/x-python")], kind="algorithm")
    stage = provider_stage(fake_ocean, [remote_one], algorithm)
    Inputs.files["/both.txt"] = b"from the url"
    # An item with both keys is a url input (pod-configuration's order): its remote part is never used.
    stage["input"].append({"index": 1, "id": "did:op:" + "cd" * 32, "url": [f"{inputs}/both.txt"], "remote": {}})

    job_id = submit_as_provider(client, fake_ocean, stage)
    row = wait_finished(db, job_id, FINISH_SECONDS)

    assert row["status"] == 70, configure_log(client, fake_ocean, job_id)
    report = json.loads(result(client, fake_ocean, job_id, 0).get_data())
    assert report["files"]["cd" * 32] == {"0": "from the url"}
    assert report["files"][remote_one.asset.did.removeprefix("did:op:")] == {"0": "remote data"}
    assert report["custom"] == "null"
    assert {q["documentId"] for q in fake_ocean.provider.downloads} == {remote_one.asset.did, algorithm.asset.did}


def _forget_the_dataset(ocean: FakeOcean, stage: dict, dataset: Purchase, algorithm: Purchase) -> None:
    ocean.aquarius.forget(dataset.asset.did)


def _forget_the_algorithm(ocean: FakeOcean, stage: dict, dataset: Purchase, algorithm: Purchase) -> None:
    ocean.aquarius.forget(algorithm.asset.did)


def _unknown_service(ocean: FakeOcean, stage: dict, dataset: Purchase, algorithm: Purchase) -> None:
    stage["input"][0]["remote"]["serviceId"] = "no-such-service"


def _nonce_ahead(ocean: FakeOcean, stage: dict, dataset: Purchase, algorithm: Purchase) -> None:
    """As if another client had signed with the engine's key at a later time: the signature is refused."""
    ocean.provider.remember_nonce(next(iter(ocean.provider.c2d_consumers)), 10**16)


def _no_compute_environment(ocean: FakeOcean, stage: dict, dataset: Purchase, algorithm: Purchase) -> None:
    """The Provider does not know the engine's address (a generated key nobody registered)."""
    ocean.provider.c2d_consumers.clear()


@pytest.mark.parametrize(
    "break_it, status, line",
    [
        (
            _forget_the_dataset,
            31,
            r"Input 0 failed: the DDO of {dataset}: http://127\.0\.0\.1:\d+/api/aquarius/assets/ddo/"
            r"{dataset} answered HTTP 404: Asset DID {dataset} not found in Elasticsearch\.",
        ),
        (_forget_the_algorithm, 32, r"Algorithm failed: the DDO of {algorithm}: .* answered HTTP 404"),
        (
            _unknown_service,
            31,
            r"Input 0 failed: service 'no-such-service' is not in the DDO of {dataset}"
            r" \(its services: '[0-9a-f]{{64}}'\)",
        ),
        (
            _nonce_ahead,
            31,
            r"Input 0 failed: file 0 of {dataset}: the Provider refused: HTTP 400:"
            r" \{{\"signature\": \"Invalid signature expected nonce \(10000000000000000\) > current nonce"
            r" \(\d+\)\.\"\}}",
        ),
        (
            _no_compute_environment,
            31,
            r"Input 0 failed: file 0 of {dataset}: the Provider refused: HTTP 400:"
            r" Provider Ganache: Service with index=[0-9a-f]{{64}} is not an access service\.",
        ),
    ],
    ids=["DDO not found", "algorithm DDO not found", "unknown serviceId", "signature refused", "not a C2D consumer"],
)
def test_a_remote_asset_that_cannot_be_fetched_ends_the_job_at_its_status_with_the_reason(
    client, db, fake_ocean, start_engine, break_it, status, line
):
    engine = start_engine()
    consumer = consumer_address(client)
    fake_ocean.provider.allow_compute_consumer(consumer)
    dataset = buy(fake_ocean, consumer, [FakeFile(b"data")])
    algorithm = buy(fake_ocean, consumer, [FakeFile(REPORT, "report.py", "text/x-python")], kind="algorithm")
    stage = provider_stage(fake_ocean, [dataset], algorithm)
    break_it(fake_ocean, stage, dataset, algorithm)

    job_id = submit_as_provider(client, fake_ocean, stage)
    row = wait_finished(db, job_id, FINISH_SECONDS)

    texts = {31: "Data provisioning failed", 32: "Algorithm provisioning failed"}
    assert (row["status"], row["statusText"]) == (status, texts[status])
    assert published(row, "output") == []
    log = configure_log(client, fake_ocean, job_id)
    assert re.search(line.format(dataset=dataset.asset.did, algorithm=algorithm.asset.did), log), log
    if "refused" in line:
        assert f"this engine signs as {consumer}" in log
        assert "OPERATOR_PRIVATE_KEY is not set" in log
    assert ("moving to algo" in log) is (status == 32)
    assert_no_secret(log, fake_ocean, (engine.config.work_dir / KEY_FILE).read_text().strip())


@pytest.mark.parametrize("too_big, status", [("dataset", 31), ("algorithm", 32)])
def test_a_remote_file_over_the_size_limit_ends_the_job(client, db, fake_ocean, start_engine, too_big, status):
    start_engine(max_input_bytes=4096)
    consumer = consumer_address(client)
    fake_ocean.provider.allow_compute_consumer(consumer)
    big = FakeFile(b"#" * 5000)
    dataset = buy(fake_ocean, consumer, [FakeFile(b"data"), big] if too_big == "dataset" else [FakeFile(b"data")])
    code = [FakeFile(REPORT), big] if too_big == "algorithm" else [FakeFile(REPORT)]
    algorithm = buy(fake_ocean, consumer, code, kind="algorithm")

    job_id = submit_as_provider(client, fake_ocean, provider_stage(fake_ocean, [dataset], algorithm))
    row = wait_finished(db, job_id, FINISH_SECONDS)

    assert row["status"] == status
    failed = "Input 0 failed" if too_big == "dataset" else "Algorithm failed"
    did = (dataset if too_big == "dataset" else algorithm).asset.did
    assert re.search(
        f"{failed}: file 1 of {did}: http://127\\.0\\.0\\.1:\\d+/api/services/download:"
        " more than the limit of 4096 bytes",
        configure_log(client, fake_ocean, job_id),
    )


def test_a_slow_provider_ends_the_job_at_the_fetch_time_limit(client, db, fake_ocean, start_engine):
    """A Provider that answers but trickles the file (a silent one is the unit tests' other case)."""
    start_engine(fetch_timeout=3.0)
    consumer = consumer_address(client)
    fake_ocean.provider.allow_compute_consumer(consumer)
    dataset = buy(fake_ocean, consumer, [FakeFile(b"z" * 32 * 1024)])
    algorithm = buy(fake_ocean, consumer, [FakeFile(REPORT)], kind="algorithm")
    fake_ocean.provider.trickle(chunk=256, pause=0.5)  # 64 s for the whole file

    job_id = submit_as_provider(client, fake_ocean, provider_stage(fake_ocean, [dataset], algorithm))
    row = wait_finished(db, job_id, FINISH_SECONDS)

    assert row["status"] == 31
    assert re.search(
        f"Input 0 failed: file 0 of {dataset.asset.did}: .*/api/services/download: not complete after 3 s",
        configure_log(client, fake_ocean, job_id),
    )
