"""The benchmark's own Postgres: an embedded server in .bench/, one database per row count.

Seeding is one INSERT ... SELECT over generate_series (split in one slice per core, and
with the indexes built after the load), so a million rows take well under a minute. Every text value
is built by SQL from templates that Python renders with
json.dumps, so the stored `workflow` and `outputsURL` look exactly like what the
service and pod-publishing write. A database already seeded with the same recipe is
reused (only the rows and nonces earlier runs added are removed); --reseed forces a new one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extensions

from operator_service.cluster.workflows import workflow_body
from operator_service.config import load_settings
from operator_service.model.status import JobStatus
from operator_service.store import migrations
from operator_service.store.pool import Database
from operator_service.tools.embedded_db import EmbeddedPostgres

ENVIRONMENT = "ocean-compute"
OWNERS = 1000
RUNNING = 1000
# Provider address written into the seeded rows (the signing bench provider is another one,
# so the rows a POST run adds can be found and removed).
SEED_PROVIDER = "0x00000000000000000000000000000000000be4c0"
SEED_VERSION = 1

ENVIRONMENT_DOCUMENT = {
    "id": ENVIRONMENT,
    "cpuNumber": 2,
    "cpuType": "AMD EPYC",
    "gpuNumber": 0,
    "gpuType": "",
    "ramGB": "4",
    "diskGB": "10",
    "priceMin": 0,
    "desc": "benchmark environment",
    "currentJobs": 0,
    "maxJobs": 10,
    "consumerAddress": "0x6d39a833d1a6789aeca50db85cb830bc08319f45",
    "storageExpiry": 604800,
    "maxJobDuration": "3600",
    "allowedChainId": [8996, 1],
}


def owner_address(n: int) -> str:
    """The n-th of the OWNERS consumer addresses (same formula as the SQL below)."""
    digest = (
        hashlib.md5(f"bench-owner-{n}".encode()).hexdigest() + hashlib.md5(f"bench-owner2-{n}".encode()).hexdigest()
    )
    return "0x" + digest[:40]


def job_id(i: int) -> str:
    """workflowId of seeded row i (1-based), 32 hex characters like the service's uuid4().hex."""
    return hashlib.md5(f"bench-job-{i}".encode()).hexdigest()


def job_owner(i: int) -> str:
    return owner_address(i % OWNERS)


def workflow_stage(algo_did: str, input_did: str) -> dict:
    """Stage 0 as the newest Provider builds it (the shape of its POST /compute)."""
    return {
        "index": 0,
        "input": [
            {
                "index": 0,
                "id": input_did,
                "remote": {"txId": "0x" + "ab" * 32, "serviceId": "0", "userdata": {}},
            }
        ],
        "compute": {"Instances": 1, "namespace": ENVIRONMENT, "maxtime": 3600},
        "algorithm": {
            "id": algo_did,
            "rawcode": "",
            "container": {
                "entrypoint": "python $ALGO",
                "image": "oceanprotocol/algo_dockers",
                "tag": "python-branin",
                "checksum": "sha256:8221d20c1c16491d7d56b9657ea09082c0ee4a8ab1a6621fa720da58b09580e4",
            },
            "algouserdata": {},
            "remote": {
                "serviceEndpoint": "https://provider.example.com",
                "txId": "0x" + "cd" * 32,
                "serviceId": "0",
                "userData": {},
            },
            "algocustomdata": {},
        },
        "output": {"metadataUri": "https://aquarius.example.com"},
    }


def _document_template() -> str:
    """jobs.workflow as the service writes it (json.dumps of the WorkFlow document), with markers."""
    workflow = {"stages": [workflow_stage("did:op:@ALGO@", "did:op:@INPUT@")], "chainId": 8996}
    return json.dumps(workflow_body("@JOB@", ENVIRONMENT, workflow, secret="@SECRET@"))


def _outputs_template() -> str:
    """outputsURL as pod-publishing writes it: outputs and logs with their URLs."""
    base = "https://ipfs.example.com/ipfs/@CID@/"
    return json.dumps(
        [
            {
                "filename": "/data/outputs/result.txt",
                "filesize": 1234,
                "url": base + "data/outputs/result.txt",
                "type": "output",
            },
            {
                "filename": "/data/logs/algorithm.log",
                "filesize": 567,
                "url": base + "data/logs/algorithm.log",
                "type": "algorithmLog",
            },
            {
                "filename": "/data/adminlogs/configure.log",
                "filesize": 890,
                "url": base + "data/adminlogs/configure.log",
                "type": "configrationLog",
            },
            {
                "filename": "/data/adminlogs/publish.log",
                "filesize": 321,
                "url": base + "data/adminlogs/publish.log",
                "type": "publishLog",
            },
        ]
    )


# Rows i = 1..N, oldest first. The newest RUNNING rows are unfinished (statuses 1..60, as
# an engine leaves them), every other row is finished: mostly 70 with outputs, some 31/32
# (provisioning failed), a few stopped (stopreq 1) or timed out (stopreq 2).
# The statuses a seeded job can have, with their texts, as SQL VALUES.
STATUS_VALUES = ", ".join(f"({status.value}, '{status.text}')" for status in JobStatus if status.value > 0)
SEED_SQL = (
    """
INSERT INTO jobs (agreementId, workflowId, owner, status, statusText, laststatusupdate, dateCreated,
                  dateFinished, outputsURL, namespace, stopreq, removed, workflow, algoDID, inputDIDs, provider)
SELECT
    '0x' || md5('bench-agreement-' || i) || md5('bench-agreement2-' || i),
    md5('bench-job-' || i),
    '0x' || substr(md5('bench-owner-' || (i %% %(owners)s)) || md5('bench-owner2-' || (i %% %(owners)s)), 1, 40),
    s.status,
    s.text,
    created + interval '30 seconds',
    created,
    CASE WHEN running THEN NULL ELSE created + make_interval(secs => 60 + i %% 900) END,
    CASE WHEN s.status = 70 THEN replace(%(outputs)s, '@CID@', 'Qm' || md5('bench-cid-' || i)) END,
    %(environment)s,
    CASE WHEN running THEN 0 WHEN i %% 97 = 0 THEN 2 WHEN i %% 89 = 0 THEN 1 ELSE 0 END,
    CASE WHEN NOT running AND i %% 50 = 0 THEN 1 ELSE 0 END,
    replace(replace(replace(replace(%(document)s,
        '@JOB@', md5('bench-job-' || i)),
        '@SECRET@', md5('bench-secret-' || i)),
        '@ALGO@', md5('bench-algo-' || (i %% 200)) || md5('bench-algo2-' || (i %% 200))),
        '@INPUT@', md5('bench-input-' || (i %% 5000)) || md5('bench-input2-' || (i %% 5000))),
    'did:op:' || md5('bench-algo-' || (i %% 200)) || md5('bench-algo2-' || (i %% 200)),
    ARRAY['did:op:' || md5('bench-input-' || (i %% 5000)) || md5('bench-input2-' || (i %% 5000))],
    %(provider)s
FROM (
    SELECT i,
           i > %(rows)s - %(running)s AS running,
           timezone('UTC', now()) - make_interval(secs => (%(rows)s - i) * 7) AS created
    FROM generate_series(%(first)s, %(last)s) AS i
) AS g
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES """
    + STATUS_VALUES
    + """) AS v(status, text)
    WHERE v.status = CASE
        WHEN g.running THEN (ARRAY[1, 20, 30, 40, 50, 60])[1 + g.i %% 6]
        WHEN g.i %% 20 = 0 THEN 31
        WHEN g.i %% 33 = 0 THEN 32
        ELSE 70 END
) AS s
"""
)


def _recipe() -> str:
    """A fingerprint of everything that shapes the seeded data."""
    steps = [step if isinstance(step, str) else inspect.getsource(step) for _, _, step in migrations.MIGRATIONS]
    text = f"{SEED_VERSION}{SEED_SQL}{_document_template()}{_outputs_template()}{OWNERS}{RUNNING}{steps}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The benchmark's own server does not flush commits to disk (the service's embedded server
# does): the figures measure the service's CPU, not this machine's disk. See bench/README.md.
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def shared_buffers() -> str:
    """A quarter of the memory, at most 4 GB: the usual size for a dedicated server, and room
    for the million-row database (about 2.2 GB with its indexes) on this project's machines."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{min(memory // 4, 4 << 30) >> 20}MB"


class BenchDatabase:
    """The embedded server and the seeded databases in `data_dir`.

    Postgres gets a production-sized buffer cache, and each database is loaded into it
    before it is measured (pg_prewarm): the service's lookups are then measured, not reads
    from the operating system's page cache, which at a million rows (random jobs, so
    nearly every request touches a page no earlier one did) would be most of them.
    """

    def __init__(self, data_dir: Path):
        self.server = EmbeddedPostgres(
            data_dir / "postgres", server_settings={"shared_buffers": shared_buffers(), **NOT_DURABLE}
        )

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @contextmanager
    def cursor(self, database: str) -> Iterator[psycopg2.extensions.cursor]:
        """An autocommit cursor on its own connection to `database`, closed afterwards."""
        conn = psycopg2.connect(**self.server.dsn_kwargs(database), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def env(self, database: str) -> dict[str, str]:
        return self.server.env(database)

    def prepare(self, rows: int, reseed: bool, log) -> str:
        """A migrated database with `rows` seeded jobs, the environment announced; its name."""
        name = f"bench_{rows}"
        recipe = _recipe()
        if not reseed and self._seeded_with(name) == recipe:
            log(f"  database {name}: reusing the seeded rows (use --reseed to seed again)")
            self._clean(name)
            self._announce(name)
            self._prewarm(name, log)
            return name
        self._drop(name)
        self.server.create_database(name)
        migrations.upgrade(Database(load_settings(self.env(name)).postgres, max_connections=1))
        started = time.monotonic()
        with self.cursor(name) as cur:
            # Bulk load: the indexes the migrations made are built once afterwards, which is
            # several times faster than maintaining them row by row.
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'")
            indexes = cur.fetchall()
            for index_name, _ in indexes:
                cur.execute(f'DROP INDEX "{index_name}"')
            cur.execute("SET maintenance_work_mem = '512MB'")
            self._insert(name, rows)
            loaded = time.monotonic()
            for _, definition in indexes:
                cur.execute(definition)
            indexed = time.monotonic()
            cur.execute("VACUUM ANALYZE jobs")
            log(
                f"  database {name}: insert {loaded - started:.1f} s, indexes {indexed - loaded:.1f} s,"
                f" vacuum/analyze {time.monotonic() - indexed:.1f} s"
            )
            cur.execute("CREATE TABLE bench_meta (recipe text NOT NULL, rows bigint NOT NULL)")
            cur.execute("INSERT INTO bench_meta VALUES (%s, %s)", (recipe, rows))
        self._announce(name)
        log(f"  database {name}: seeded {rows} rows in {time.monotonic() - started:.1f} s")
        self._prewarm(name, log)
        return name

    def _prewarm(self, name: str, log) -> None:
        """Load the jobs and nonces tables and their indexes into Postgres' buffer cache."""
        started = time.monotonic()
        with self.cursor(name) as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            cur.execute(
                "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'"
                " WHERE c.relkind IN ('r', 'i') AND (c.relname IN ('jobs', 'nonces')"
                "  OR c.oid IN (SELECT indexrelid FROM pg_index"
                " WHERE indrelid IN ('jobs'::regclass, 'nonces'::regclass)))"
            )
            blocks = int(cur.fetchone()[0] or 0)
        log(
            f"  database {name}: {blocks * 8 >> 10} MB loaded into the buffer cache"
            f" in {time.monotonic() - started:.1f} s"
        )

    def _insert(self, name: str, rows: int) -> None:
        """SEED_SQL over 1..rows, split in one slice per core, each on its own connection."""
        slices = max(1, min(os.cpu_count() or 1, rows // 50000))
        bounds = [(rows * k // slices + 1, rows * (k + 1) // slices) for k in range(slices)]
        params = {
            "rows": rows,
            "running": min(RUNNING, rows),
            "owners": OWNERS,
            "environment": ENVIRONMENT,
            "provider": SEED_PROVIDER,
            "document": _document_template(),
            "outputs": _outputs_template(),
        }

        def insert(first: int, last: int) -> None:
            with self.cursor(name) as cur:
                cur.execute(SEED_SQL, {**params, "first": first, "last": last})

        with ThreadPoolExecutor(len(bounds)) as pool:
            for future in [pool.submit(insert, first, last) for first, last in bounds]:
                future.result()

    def _seeded_with(self, name: str):
        with self.cursor("postgres") as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                return None
        with self.cursor(name) as cur:
            cur.execute("SELECT to_regclass('bench_meta') IS NOT NULL")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT recipe FROM bench_meta LIMIT 1")
            row = cur.fetchone()
            return row[0] if row else None

    def _drop(self, name: str) -> None:
        with self.cursor("postgres") as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _clean(self, name: str) -> None:
        """Remove what earlier runs added: the jobs POSTed (any provider but the seed's) and nonces."""
        with self.cursor(name) as cur:
            cur.execute("DELETE FROM jobs WHERE provider IS DISTINCT FROM %s", (SEED_PROVIDER,))
            removed = cur.rowcount
            cur.execute("TRUNCATE nonces")
            if removed:
                cur.execute("VACUUM ANALYZE jobs")

    def after_post(self, name: str) -> None:
        """Back to exactly the seeded state, so later scenarios see RUNNING running jobs."""
        self._clean(name)

    def _announce(self, name: str) -> None:
        with self.cursor(name) as cur:
            cur.execute("SELECT * FROM announce(%s, %s, 10)", (ENVIRONMENT, json.dumps(ENVIRONMENT_DOCUMENT)))

    def sequential_scans(self, name: str) -> int:
        """Sequential scans of `jobs` and `nonces` in database `name` so far.

        Every lookup the routes make must go through an index, so a scenario must not add
        any. Backends report their counts when they go idle, within about a second.
        """
        with self.cursor(name) as cur:
            cur.execute(
                "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables WHERE relname IN ('jobs', 'nonces')"
            )
            return int(cur.fetchone()[0])

    def running_count(self, name: str) -> int:
        with self.cursor(name) as cur:
            cur.execute("SELECT count(*) FROM jobs WHERE dateFinished IS NULL AND status <> 0")
            return cur.fetchone()[0]
