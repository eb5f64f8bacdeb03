"""`operator-service jobs` as an operator runs it: a process reading the service's database, by
POSTGRES_* or, without POSTGRES_HOST, the embedded database of `make run` in OPERATOR_DATA_DIR;
it lists what the admin routes list and shows one job with its history.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.cli_support import clean_env, command
from tests.conftest import OWNER, compute_body

API = "/api/v1/operator"


@pytest.fixture
def jobs_env(postgres_env) -> dict[str, str]:
    return clean_env(**postgres_env)


def listed_ids(*args: str, env: dict[str, str]) -> list[str]:
    """The job ids a listing shows, between its header and its summary line."""
    result = command("jobs", *args, env=env)
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()[1:-1]]


def start(submit, agreement_id: str, owner: str = OWNER) -> str:
    response = submit(compute_body(owner=owner, agreement_id=agreement_id))
    assert response.status_code == 200
    return response.get_json()[0]["jobId"]


def test_the_listing_shows_jobs_newest_first_with_filters_and_pages(submit, engine, jobs_env):
    other = "0x" + "cd" * 20
    first, second = start(submit, "0x1"), start(submit, "0x2")
    theirs = start(submit, "0x3", owner=other)
    engine.set_status(second, 70, "Job finished")
    engine.finish(second)

    listing = command("jobs", env=jobs_env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "STATUS", "CREATED"]
    assert [line.split()[0] for line in lines[1:4]] == [theirs, second, first]
    assert "70 Job finished" in lines[2] and lines[2].rstrip().endswith("finished")
    assert lines[-1] == "jobs 1-3"

    assert listed_ids("--owner", other.upper().replace("0X", "0x"), env=jobs_env) == [theirs]
    assert listed_ids("--status", "70", env=jobs_env) == [second]
    assert command("jobs", "--environment", "elsewhere", env=jobs_env).stdout.splitlines()[-1] == "no jobs"
    tomorrow = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    assert command("jobs", "--since", tomorrow, env=jobs_env).stdout.splitlines()[-1] == "no jobs"
    page = command("jobs", "--limit", "2", "--offset", "1", env=jobs_env).stdout.splitlines()
    assert [line.split()[0] for line in page[1:-1]] == [second, first]
    assert page[-1] == "jobs 2-3; next page: --offset 3"


def test_json_is_what_the_admin_routes_answer(client, submit, engine, jobs_env, admin_headers):
    job_id = start(submit, "0x1")
    engine.set_status(job_id, 31, "Data provisioning failed")
    engine.finish(job_id)
    listed = command("jobs", "--json", env=jobs_env)
    assert json.loads(listed.stdout) == client.get(f"{API}/jobs", headers=admin_headers).get_json()
    shown = command("jobs", job_id, "--json", env=jobs_env)
    answer = client.get(f"{API}/job", query_string={"jobId": job_id}, headers=admin_headers).get_json()
    assert json.loads(shown.stdout) == answer
    assert answer["endReason"] == "provisioning-failed"


def test_one_job_is_shown_with_its_history(submit, engine, jobs_env):
    job_id = start(submit, "0x1")
    engine.set_status(job_id, 20, "Configuring volumes")
    engine.set_timed_out(job_id)
    engine.set_status(job_id, 70, "Job finished")
    engine.finish(job_id)
    shown = command("jobs", job_id, env=jobs_env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["jobId", job_id]
    assert any(line.split()[:2] == ["endReason", "timed-out"] for line in lines)
    history = lines[lines.index("history (UTC):") + 1 :]
    assert [line.split("  ")[2].split(",")[0] for line in history] == [
        "1 Warming up",
        "20 Configuring volumes",
        "20 Configuring volumes",
        "70 Job finished",
        "70 Job finished",
    ]
    assert history[0].endswith("(by operator-service)") and history[1].endswith("(by an unnamed session)")
    assert "finished: timed-out" in history[-1]


def test_an_unknown_job_is_one_line(jobs_env):
    missing = command("jobs", "f" * 32, env=jobs_env)
    assert (missing.returncode, missing.stderr) == (1, f"operator-service jobs: No job {'f' * 32}\n")


@pytest.mark.skipif(bool(os.environ.get("POSTGRES_HOST")), reason="the embedded test server is the one found")
def test_without_postgres_host_it_finds_the_embedded_database_of_the_data_folder(submit, postgres_env, tmp_path: Path):
    job_id = start(submit, "0x1")
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "operator-password").write_text(postgres_env["POSTGRES_PASSWORD"] + "\n")
    env = clean_env(
        OPERATOR_DATA_DIR=str(tmp_path), POSTGRES_PORT=postgres_env["POSTGRES_PORT"], POSTGRES_DB="operator_test"
    )
    found = command("jobs", env=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[1].split()[0] == job_id
    (tmp_path / "postgres" / "operator-password").write_text("not the password\n")
    refused = command("jobs", env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        f"operator-service jobs: cannot use the database at 127.0.0.1:{postgres_env['POSTGRES_PORT']}/operator_test"
        f" (the embedded database in {tmp_path / 'postgres'})"
    )
