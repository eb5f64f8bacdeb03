"""The `operator-service` command as a new operator meets it: every subcommand's wrong arguments,
bad settings, bad keys and unreachable dependencies end in one line on stderr, never a traceback;
every option says what it does and its default; `--version`; `sign` makes signatures the
service accepts; the demo finds the service wherever `operator-service run` was told to listen.

Each command runs as a process, as from a shell; the environment holds no setting of this
machine's (no POSTGRES_*, OPERATOR_*, ENGINE_*, KUBE*) unless a case gives one.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from operator_service import __version__
from operator_service.domain.signatures import provider_message
from operator_service.model.personal_sign import recover_signer
from operator_service.tools import cli, local_service
from operator_service.tools.embedded_db import free_port
from operator_service.tools.folder_lock import LOCK_FILE
from tests.cli_support import clean_env, command

KEY = "0x5d75837394b078ce97bc289fa8d75e21000573520bfa7784a9d28ccaae602bf8"
NOT_HEX = "0xkey-" + "z" * 60
ZERO = "0x" + "00" * 32


def refused_port() -> str:
    return str(free_port())  # nothing listens there: connections are refused at once


def a_file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return str(path / "data")


# (id, arguments, environment, exit code, text of the one line on stderr)
ERRORS = [
    ("no command", [], {}, 2, "operator-service: the following arguments are required: COMMAND"),
    ("unknown command", ["frobnicate"], {}, 2, "invalid choice: 'frobnicate'"),
    ("run: unknown option", ["run", "--frobnicate"], {}, 2, "operator-service run: unrecognized arguments"),
    ("run: bad --bind", ["run", "--bind", "localhost:http"], {}, 2, "OPERATOR_BIND (or --bind) must be HOST:PORT"),
    ("run: bad setting", ["run"], {"NONCE_WINDOW": "soon"}, 2, "NONCE_WINDOW must be a whole number"),
    ("run: data folder under a file", ["run", "--data-dir", "{file}"], {}, 1, "cannot create the data folder"),
    ("serve: unknown option", ["serve", "--workers", "3"], {}, 2, "operator-service serve: unrecognized arguments"),
    ("serve: bad --bind", ["serve", "--bind", "127.0.0.1:99999"], {}, 2, "OPERATOR_BIND (or --bind) must be"),
    ("serve: bad setting", ["serve"], {"POSTGRES_PORT": "five"}, 2, "POSTGRES_PORT must be a whole number"),
    ("migrate: extra argument", ["migrate", "now"], {}, 2, "operator-service migrate: unrecognized arguments: now"),
    (
        "migrate: no database",
        ["migrate"],
        {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "{refused}"},
        1,
        "operator-service migrate: cannot use the database at 127.0.0.1",
    ),
    ("reconcile: extra argument", ["reconcile", "-x"], {}, 2, "operator-service reconcile: unrecognized arguments"),
    ("reconcile: bad setting", ["reconcile"], {"RECONCILE_INTERVAL": "often"}, 2, "RECONCILE_INTERVAL must be"),
    (
        "reconcile: no cluster with KUBERNETES=on",
        ["reconcile"],
        {"KUBERNETES": "on", "KUBECONFIG": "/nonexistent/kubeconfig"},
        1,
        "operator-service reconcile: Kubernetes unavailable: KUBERNETES=on but",
    ),
    ("engine: unknown option", ["engine", "--jobs", "3"], {}, 2, "operator-service engine: unrecognized arguments"),
    ("engine: bad setting", ["engine"], {"maxJobs": "lots"}, 2, "operator-service engine: maxJobs must be a number"),
    (
        "engine: no database",
        ["engine"],
        {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "{refused}"},
        1,
        "operator-service engine: cannot reach the database",
    ),
    (
        "demo: service not running",
        ["demo", "--url", "http://127.0.0.1:{refused}", "--timeout", "5"],
        {},
        1,
        "operator-service demo: cannot reach the service at http://127.0.0.1:",
    ),
    ("demo: not a URL", ["demo", "--url", "localhost:8050"], {}, 2, "--url must be an http URL"),
    ("demo: DEMO_URL not a URL", ["demo"], {"DEMO_URL": "ftp://x"}, 2, "DEMO_URL must be an http URL"),
    ("demo: bad OPERATOR_BIND", ["demo"], {"OPERATOR_BIND": "host:port"}, 2, "OPERATOR_BIND (or --bind) must be"),
    ("demo: Unix socket", ["demo"], {"OPERATOR_BIND": "unix:/run/op.sock"}, 2, "OPERATOR_BIND is a Unix socket"),
    ("demo: bad --timeout", ["demo", "--timeout", "soon"], {}, 2, "argument --timeout: must be a number of seconds"),
    ("sign: nothing to sign", ["sign", "--key", KEY], {}, 2, "operator-service sign: give either MESSAGE, or --owner"),
    ("sign: both", ["sign", "text", "--owner", "0x1", "--key", KEY], {}, 2, "give either MESSAGE, or --owner"),
    ("sign: no key", ["sign", "text"], {}, 2, "give the Provider's private key with --key or PROVIDER_PRIVATE_KEY"),
    ("sign: short key", ["sign", "text", "--key", "0x1234"], {}, 2, "--key: a private key is 32 bytes"),
    ("sign: not hex", ["sign", "text", "--key", NOT_HEX], {}, 2, "this one has 64 characters"),
    ("jobs: bad --since", ["jobs", "--since", "yesterday"], {}, 2, "argument --since: must be epoch seconds or"),
    ("jobs: bad --limit", ["jobs", "--limit", "0"], {}, 2, "argument --limit: must be a whole number from 1 to"),
    ("jobs: bad --status", ["jobs", "--status", "done"], {}, 2, "argument --status: invalid int value: 'done'"),
    (
        "jobs: no database",
        ["jobs"],
        {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "{refused}"},
        1,
        "operator-service jobs: cannot use the database at 127.0.0.1",
    ),
    (
        "jobs: no embedded database",
        ["jobs"],
        {"OPERATOR_DATA_DIR": "{file}"},
        1,
        "operator-service jobs: POSTGRES_HOST is not set and",
    ),
    ("jobs: bad setting", ["jobs"], {"POSTGRES_HOST": "db", "POSTGRES_PORT": "five"}, 2, "POSTGRES_PORT must be"),
    (
        "sign: bad key in the environment",
        ["sign", "--owner", "0x1"],
        {"PROVIDER_PRIVATE_KEY": ZERO},
        2,
        "PROVIDER_PRIVATE_KEY: this is not a valid secp256k1 private key",
    ),
]


@pytest.mark.parametrize("name, args, env, code, text", ERRORS, ids=[case[0] for case in ERRORS])
def test_every_failure_is_one_line_without_a_traceback(tmp_path, name, args, env, code, text) -> None:
    port = refused_port()
    fill = {"{refused}": port, "{file}": a_file(tmp_path)}

    def filled(value: str) -> str:
        for placeholder, replacement in fill.items():
            value = value.replace(placeholder, replacement)
        return value

    result = command(*map(filled, args), env=clean_env(**{key: filled(value) for key, value in env.items()}))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    assert text in lines[0]
    assert lines[0].startswith("operator-service")
    assert result.returncode == code, output
    for secret in (KEY, "0x1234", NOT_HEX, ZERO):
        assert secret.removeprefix("0x") not in result.stderr, "a key is never repeated"


def test_version() -> None:
    result = command("--version")
    assert result.returncode == 0
    assert result.stdout == f"operator-service {__version__}\n"


def test_every_subcommand_is_listed_and_every_option_says_what_it_does_and_its_default() -> None:
    parsers = cli.subcommand_parsers()
    top_level = cli.parser().format_help()
    assert set(parsers) >= {"run", "serve", "migrate", "reconcile", "engine", "demo", "sign", "jobs"}
    undocumented = []
    for name, parser in parsers.items():
        assert parser.prog == f"operator-service {name}"
        assert parser.description, f"{name} has no description"
        assert re.search(rf"^\s+{name}\s+\S", top_level, re.MULTILINE) or f"    {name}\n" in top_level
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                undocumented.append(f"{label}: no help")
            elif "default" not in action.help:
                undocumented.append(f"{label}: its help does not say its default")
    assert undocumented == []


@pytest.mark.parametrize("name", sorted(cli.subcommand_parsers()))
def test_help_and_a_wrong_option_of_each_subcommand(name) -> None:
    result = command(name, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: operator-service {name}")
    wrong = command(name, "--no-such-option")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.splitlines() == [
        f"operator-service {name}: unrecognized arguments: --no-such-option (see operator-service {name} --help)"
    ]


def test_sign_makes_what_the_service_accepts() -> None:
    from eth_keys import keys

    address = keys.PrivateKey(bytes.fromhex(KEY[2:])).public_key.to_address()
    owner, job_id = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA", "a" * 32
    before = time.time_ns()
    result = command("sign", "--owner", owner, "--job-id", job_id, env=clean_env(PROVIDER_PRIVATE_KEY=KEY))
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert list(fields) == ["owner", "jobId", "nonce", "providerSignature"]
    assert int(fields["nonce"]) >= before, "a fresh nonce, in ns"
    signed = provider_message(owner, job_id, fields["nonce"])
    assert recover_signer(fields["providerSignature"], signed) == address
    assert recover_signer(" " + fields["providerSignature"] + "\n", signed) == address, "a pasted signature"

    written_out = command("sign", f"{owner}{job_id}123", "--key", KEY)
    assert written_out.returncode == 0
    assert recover_signer(written_out.stdout.strip(), provider_message(owner, job_id, "123")) == address


def test_an_unexpected_error_is_one_line_and_its_traceback_is_kept_for_the_report(capsys) -> None:
    def broken() -> int:
        raise RuntimeError("something we did not foresee\nsecond line")

    assert cli._guarded("run", broken) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("operator-service run: unexpected error (RuntimeError: something we did not foresee)")
    report = Path(line.rsplit(" ", 1)[1])
    try:
        text = report.read_text()
        assert "Traceback" in text and "in broken" in text and "second line" in text
    finally:
        report.unlink()


@pytest.mark.parametrize(
    "given, env, url, source",
    [
        ("http://service.example:9000/", {"DEMO_URL": "http://other:1"}, "http://service.example:9000", "--url"),
        (None, {"DEMO_URL": "https://x.example", "OPERATOR_BIND": "127.0.0.1:1"}, "https://x.example", "DEMO_URL"),
        (None, {"OPERATOR_BIND": "0.0.0.0:9000"}, "http://127.0.0.1:9000", "OPERATOR_BIND"),
        (None, {"OPERATOR_BIND": "[::]:9000"}, "http://[::1]:9000", "OPERATOR_BIND"),
        (None, {"OPERATOR_BIND": "10.1.2.3:9000"}, "http://10.1.2.3:9000", "OPERATOR_BIND"),
        (None, {}, "http://127.0.0.1:8050", "the default of make run"),
    ],
)
def test_where_the_demo_looks_for_the_service(tmp_path, given, env, url, source) -> None:
    found = local_service.find(given, {"OPERATOR_DATA_DIR": str(tmp_path), **env})
    assert (found.url, found.source) == (url, source)


def test_a_url_recorded_by_a_launcher_that_is_gone_is_not_used(tmp_path) -> None:
    local_service.record(tmp_path, "127.0.0.1:9000")
    (tmp_path / LOCK_FILE).write_text(f"{os.getpid()}\n")
    assert local_service.find(None, {"OPERATOR_DATA_DIR": str(tmp_path)}).url == "http://127.0.0.1:9000"
    dead = subprocess.Popen(["true"])  # a PID that no longer runs
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(f"{dead.pid}\n")
    assert local_service.find(None, {"OPERATOR_DATA_DIR": str(tmp_path)}).url == "http://127.0.0.1:8050"


def test_the_demo_finds_a_service_started_with_bind_and_no_variable(launch) -> None:
    """`operator-service run --bind` with no OPERATOR_BIND: the demo, given nothing, reaches it."""
    port = free_port()
    run = launch("--no-engine", "--bind", f"127.0.0.1:{port}")
    run.wait_ready()
    assert (run.data_dir / local_service.URL_FILE).read_text().strip() == f"http://127.0.0.1:{port}"
    env = {key: value for key, value in run.env.items() if key != "OPERATOR_BIND"}
    # No engine runs, so the demo stops once it has asked the service for environments.
    demo = command("demo", "--timeout", "3", env=env)
    assert f"service: http://127.0.0.1:{port} (from the operator-service run using {run.data_dir})" in demo.stdout
    assert demo.stderr.splitlines() == [
        "operator-service demo: no engine announced an environment; is the engine running (make run starts one)?"
    ]
    assert run.interrupt() == 0
    assert not (run.data_dir / local_service.URL_FILE).exists(), "the record ends with the launcher"
