"""In-place upgrades of real databases: one the original service filled under concurrent POSTs
(two running jobs sharing an agreementId, which it let in), and one that applied our
migrations when migration 4 still created the unique index itself."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import psycopg2
import pytest

from operator_service.store import migrations
from operator_service.store.pool import Database
from tests.conftest import OWNER, compute_body, run_together
from tests.ocean_engine import OceanEngine
from tests.original_schema import ORIGINAL_HEAD_SCHEMA
from tests.sql_support import query_and_close

INIT = "/api/v1/operator/pgsqlinit"
COMPUTE = "/api/v1/operator/compute"
ALL_VERSIONS = [version for version, _, _ in migrations.MIGRATIONS]

# What the original left: 0xdup runs twice (and once more, finished), 0xsolo runs once.
ORIGINAL_DUPLICATES = """
INSERT INTO jobs (agreementId, workflowId, owner, status, statusText, workflow, namespace, dateCreated, dateFinished)
VALUES
       ('0xdup', 'dupjob1', '0xowner', 40, 'Running algorithm ', '{}', 'ocean-compute',
        NOW() - interval '3 minutes', NULL),
       ('0xdup', 'dupjob2', '0xowner', 1, 'Warming up', '{}', 'ocean-compute', NOW() - interval '2 minutes', NULL),
       ('0xdup', 'dupold', '0xowner', 70, 'Job finished', '{}', 'ocean-compute', NOW() - interval '1 day', NOW()),
       ('0xsolo', 'solojob', '0xowner', 40, 'Running algorithm ', '{}', 'ocean-compute', NOW(), NULL);
"""


def _execute(settings, sql: str, params: tuple = ()) -> list[tuple]:
    return query_and_close(psycopg2.connect(**settings.postgres.dsn_kwargs(), connect_timeout=5), sql, params)


def _post(client, provider, agreement_id: str):
    body = compute_body(agreement_id=agreement_id)
    body.update(provider.signed(OWNER))
    return client.post(COMPUTE, json=body)


@pytest.fixture
def original_with_duplicates(fresh_database):
    _execute(fresh_database, ORIGINAL_HEAD_SCHEMA + ORIGINAL_DUPLICATES)
    return fresh_database


def test_an_original_database_with_duplicate_running_agreements_is_upgraded_in_place(
    original_with_duplicates, admin_headers, caplog, make_app
):
    settings = original_with_duplicates
    before = _execute(settings, "SELECT * FROM jobs ORDER BY workflowId")
    client = make_app(settings).test_client()
    caplog.set_level(logging.INFO)

    answer = client.post(INIT, headers=admin_headers)
    assert answer.status_code == 200
    assert answer.get_json() == {
        "version": migrations.LATEST_VERSION,
        "applied": ALL_VERSIONS,
        "duplicateRunningAgreements": [{"agreementId": "0xdup", "jobIds": ["dupjob1", "dupjob2"]}],
    }
    assert "found 2 running jobs sharing 1 agreementIds" in caplog.text and "dupjob1, dupjob2" in caplog.text
    assert [row[:18] for row in _execute(settings, "SELECT * FROM jobs ORDER BY workflowId")] == before, (
        "no row deleted or changed"
    )
    running = client.get("/api/v1/operator/runningjobs")
    assert running.status_code == 200
    assert sorted(job["jobId"] for job in running.get_json()) == ["dupjob1", "dupjob2", "oldjob", "solojob"]
    again = client.post(INIT, headers=admin_headers)
    assert again.get_json() == {"version": migrations.LATEST_VERSION, "applied": []}


def test_after_the_upgrade_no_new_job_shares_a_running_agreement(
    original_with_duplicates, admin_headers, provider, make_app
):
    settings = original_with_duplicates
    app = make_app(settings)
    client = app.test_client()
    assert client.post(INIT, headers=admin_headers).status_code == 200
    OceanEngine(settings.postgres.dsn_kwargs()).announce()
    in_use = "`agreementId` already in use for other job."
    for agreement in ("0xdup", "0xsolo"):
        refused = _post(client, provider, agreement)
        assert (refused.status_code, refused.get_json()) == (400, {"error": in_use}), agreement

    _execute(settings, "UPDATE jobs SET dateFinished = NOW() WHERE workflowId = 'dupjob1'")
    assert _post(client, provider, "0xdup").status_code == 400, "dupjob2 still runs with it"
    _execute(settings, "UPDATE jobs SET dateFinished = NOW() WHERE workflowId = 'dupjob2'")
    assert _post(client, provider, "0xdup").status_code == 200
    assert _post(client, provider, "0xdup").status_code == 400

    codes = run_together(6, lambda: _post(app.test_client(), provider, "0xnew").status_code)
    assert sorted(codes) == [200] + [400] * 5
    assert _execute(settings, "SELECT count(*) FROM jobs WHERE agreementId = '0xnew'") == [(1,)]


def test_migrate_says_what_it_found(original_with_duplicates):
    postgres = original_with_duplicates.postgres
    env = {
        **os.environ,
        "POSTGRES_HOST": postgres.host,
        "POSTGRES_PORT": str(postgres.port),
        "POSTGRES_USER": postgres.user,
        "POSTGRES_PASSWORD": postgres.password,
        "POSTGRES_DB": postgres.database,
    }
    result = subprocess.run(
        [sys.executable, "-m", "operator_service.tools.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "found 2 running jobs sharing 1 agreementIds" in result.stdout
    assert "0xdup: dupjob1, dupjob2" in result.stdout


# Migration 4 as it was first released, with the unique index it no longer creates.
FIRST_JOB_INDEXES = migrations.JOB_INDEXES + (
    "CREATE UNIQUE INDEX IF NOT EXISTS uniq_running_agreementid ON jobs (agreementId) WHERE dateFinished IS NULL;"
)


def test_a_database_that_applied_the_first_migration_4_is_upgraded_unchanged(fresh_database):
    steps = {version: step for version, _, step in migrations.MIGRATIONS[:6]}
    steps[4] = FIRST_JOB_INDEXES
    _execute(
        fresh_database,
        "CREATE TABLE schema_migrations (version int PRIMARY KEY, description text NOT NULL,"
        " applied_at timestamp without time zone NOT NULL DEFAULT now())",
    )
    for version, step in steps.items():
        _execute(fresh_database, step)
        _execute(fresh_database, "INSERT INTO schema_migrations (version, description) VALUES (%s, 'old')", (version,))
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'uniq_running_agreementid'"
    before = _execute(fresh_database, index)

    db = Database(fresh_database.postgres)
    upgrade = migrations.upgrade(db)
    db.close()
    assert (upgrade.applied, upgrade.shared_agreements) == (ALL_VERSIONS[6:], {})
    assert _execute(fresh_database, index) == before
    assert _execute(fresh_database, "SELECT count(*) FROM pg_trigger WHERE tgname = 'operator_kept_agreements'") == [
        (0,)
    ]
