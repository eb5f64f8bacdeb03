"""Fixtures: a real Postgres (embedded, or the server POSTGRES_HOST names), the app,
its test client, and a Provider that signs requests as the Ocean Provider does."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest
from eth_keys import keys
from flask import Flask

from operator_service.api.app import create_app
from operator_service.cluster import client as kube
from operator_service.config import Settings, load_settings
from operator_service.domain.signatures import provider_message, sign_provider_message
from operator_service.store import migrations
from operator_service.store.pool import Database
from operator_service.tools.embedded_db import EmbeddedPostgres
from tests.ocean_engine import OceanEngine

pytest_plugins = [
    "tests.fake_kube",
    "tests.engine_support",
    "tests.fake_ocean",
    "tests.launcher_support",
    "tests.stub_http",
]

T = TypeVar("T")

TEST_DATABASE = "operator_test"
ADMIN_SECRET = "test-admin-secret"
OWNER = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"
# The pause between retries of a cluster call in tests; the service's own is kube.BACKOFF_SECONDS.
QUICK_BACKOFF = (0.01,)


@pytest.fixture(scope="session")
def postgres_env() -> Iterator[dict[str, str]]:
    """POSTGRES_* for the test database: POSTGRES_HOST's server if set, else an embedded one."""
    if os.environ.get("POSTGRES_HOST"):
        env = {key: value for key, value in os.environ.items() if key.startswith("POSTGRES_")}
        yield env
        return
    # Not under pytest's basetemp: pytest makes that folder private to root at every
    # session start, which would cut the server (run as an unprivileged user) off its data.
    data_dir = Path(tempfile.mkdtemp(prefix="operator-test-pg-"))
    server = EmbeddedPostgres(data_dir / "data").start()
    server.create_database(TEST_DATABASE)
    yield server.env(TEST_DATABASE)
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stoppable_postgres() -> Iterator[EmbeddedPostgres]:
    """A second embedded server, for the tests that stop or freeze it (own_server)."""
    data_dir = Path(tempfile.mkdtemp(prefix="operator-test-stoppable-"))
    server = EmbeddedPostgres(data_dir / "data").start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def own_server(stoppable_postgres, base_env) -> Iterator[tuple[EmbeddedPostgres, dict[str, str]]]:
    """A server the test may stop, freeze and start again, and the environment of a migrated
    database of the test's own on it. The server runs again after the test, for the next one."""
    server = stoppable_postgres.start()
    name = f"own_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    env = {**base_env, **server.env(name)}
    database = Database(load_settings(env).postgres)
    try:
        migrations.upgrade(database)
    finally:
        database.close()
    yield server, env
    server.start()


@pytest.fixture(scope="session")
def base_env(postgres_env, tmp_path_factory) -> dict[str, str]:
    return {
        **postgres_env,
        "ALLOWED_ADMINS": f'["{ADMIN_SECRET}"]',
        "KUBERNETES": "off",
        "RESULTS_DIR": str(tmp_path_factory.mktemp("results")),
    }


@pytest.fixture
def make_settings(base_env):
    def make(**overrides: str) -> Settings:
        return load_settings({**base_env, **overrides})

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def session_db(base_env) -> Iterator[Database]:
    database = Database(load_settings(base_env).postgres)
    migrations.upgrade(database)
    yield database
    database.close()


@pytest.fixture
def db(session_db) -> Database:
    """The migrated test database, emptied before each test."""
    with session_db.transaction() as cur:
        cur.execute("TRUNCATE jobs, envs, nonces, job_history")
    return session_db


@pytest.fixture
def fresh_database(base_env) -> Iterator[Settings]:
    """An empty database on the test server, dropped afterwards."""
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin_dsn = load_settings({**base_env, "POSTGRES_DB": "postgres"}).postgres.dsn_kwargs()
    conn = psycopg2.connect(**admin_dsn)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    settings = load_settings({**base_env, "POSTGRES_DB": name})
    yield settings
    conn.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def connect_cluster() -> Iterator[Callable[..., kube.Cluster | None]]:
    """kube.connect, pausing QUICK_BACKOFF between retries; every cluster it made is closed after the test."""
    made: list[kube.Cluster] = []

    def connect(mode: str, **options: Any) -> kube.Cluster | None:
        cluster = kube.connect(mode, **{"backoff": QUICK_BACKOFF, **options})
        if cluster is not None:
            made.append(cluster)
        return cluster

    yield connect
    for cluster in made:
        cluster.close()


@pytest.fixture
def make_app(make_settings, connect_cluster) -> Iterator[Callable[..., Flask]]:
    """Build apps: from `settings`, else from the test settings with `overrides`; with `cluster`, else
    with the one KUBERNETES says (through connect_cluster). Whatever each opened (its pool, its
    cluster client) is closed after the test."""
    made: list[Flask] = []

    def make(settings: Settings | None = None, cluster: kube.Cluster | None = None, **overrides: str) -> Flask:
        settings = settings or make_settings(**overrides)
        made.append(create_app(settings, cluster or connect_cluster(settings.kubernetes)))
        return made[-1]

    yield make
    for application in made:
        application.extensions["operator_service"].close()


@pytest.fixture
def app(settings, db, make_app) -> Flask:
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cluster_app(make_app, db, kubeconfig, monkeypatch) -> Flask:
    """The app with KUBERNETES=on, talking to the fake API server through a kubeconfig."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return make_app(KUBERNETES="on", REGISTRATION_GRACE="0.01")


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Admin": ADMIN_SECRET}


def run_together(count: int, call: Callable[[], T]) -> list[T]:
    """Run `call` in `count` threads released at the same moment; their results."""
    barrier = threading.Barrier(count)
    results: list[T] = []

    def run() -> None:
        barrier.wait()
        results.append(call())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


_nonces = itertools.count()


def fresh_nonce() -> str:
    """A nanosecond nonce as the newest Provider sends, unique within the test run."""
    return str(time.time_ns() + next(_nonces))


@dataclass
class Provider:
    private_key: str

    @property
    def address(self) -> str:
        return keys.PrivateKey(bytes.fromhex(self.private_key[2:])).public_key.to_checksum_address().lower()

    def sign(self, message: str) -> str:
        return sign_provider_message(self.private_key, message)

    def signed(self, owner: str, job_id: str | None = None, nonce: str | None = None) -> dict[str, str]:
        """nonce and providerSignature over owner + jobId + nonce, as the Provider sends them."""
        nonce = nonce or fresh_nonce()
        return {"nonce": nonce, "providerSignature": self.sign(provider_message(owner, job_id, nonce))}


@pytest.fixture
def provider() -> Provider:
    return Provider("0x" + os.urandom(32).hex())


@pytest.fixture
def engine(base_env) -> OceanEngine:
    """Ocean's operator-engine for namespace ocean-compute, speaking SQL to our schema."""
    dsn = {
        "host": base_env["POSTGRES_HOST"],
        "port": base_env.get("POSTGRES_PORT", "5432"),
        "user": base_env.get("POSTGRES_USER"),
        "password": base_env.get("POSTGRES_PASSWORD"),
        "dbname": base_env.get("POSTGRES_DB"),
    }
    return OceanEngine({key: value for key, value in dsn.items() if value}, "ocean-compute")


def compute_body(owner: str = OWNER, agreement_id: str = "0x0", environment: str = "ocean-compute") -> dict:
    """A POST /compute body shaped like the newest Provider's."""
    return {
        "agreementId": agreement_id,
        "owner": owner,
        "environment": environment,
        "chainId": 8996,
        "providerAddress": "0x0000000000000000000000000000000000000001",
        "validUntil": 0,
        "workflow": {
            "stages": [
                {
                    "index": 0,
                    "input": [
                        {
                            "index": 0,
                            "id": "did:op:87bdaabb33354d2eb014af5091c604fb4b0f67dc6cca4d18a96547bffdc27bcf",
                            "remote": {"txId": "0x1", "serviceId": "0"},
                        }
                    ],
                    "compute": {"Instances": 1, "namespace": "ocean-compute", "maxtime": 3600},
                    "algorithm": {
                        "id": "did:op:7f8f9c1d8f0e6a4b1f0f8a3b1c7e2d9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
                        "rawcode": "",
                        "container": {"entrypoint": "node $ALGO", "image": "node", "tag": "10", "checksum": ""},
                    },
                    "output": {"metadataUri": "http://aquarius:5000"},
                }
            ]
        },
    }


@pytest.fixture
def submit(client, provider, engine):
    """POST a signed job (announcing its environment first); returns the response."""

    def post(body: dict | None = None, announce: bool = True):
        body = body or compute_body()
        if announce:
            engine.announce()
        body.update(provider.signed(body["owner"]))
        return client.post("/api/v1/operator/compute", json=body)

    return post


@pytest.fixture
def results_dir(settings) -> Path:
    return Path(settings.results_dir)
