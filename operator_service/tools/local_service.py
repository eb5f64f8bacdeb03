"""Where the service of this machine answers, for the commands that call it (`operator-service demo`),
and where its database is, for those that read it (`operator-service jobs`).

`operator-service run` records the URL of its API in its data folder (URL_FILE) while it runs,
so a client finds the service however the launcher was told where to listen. A client takes,
in this order:

1. the URL it was given (`--url`; `make demo URL=...`);
2. DEMO_URL;
3. OPERATOR_BIND, the variable `make run` listens on (a wildcard host is reached through loopback);
4. the URL recorded by the launcher that runs on OPERATOR_DATA_DIR (default `.operator-data`),
   which is how `operator-service run --bind ...` is found;
5. http://127.0.0.1:8050, the default of `make run`.

The database is the one POSTGRES_HOST (and the other POSTGRES_*) names; without
POSTGRES_HOST, the embedded one of `make run`: 127.0.0.1, POSTGRES_PORT (54329), the
`postgres` user with the password kept in OPERATOR_DATA_DIR/postgres, POSTGRES_DB (operator).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from operator_service.env_vars import ConfigError, env_int
from operator_service.store.settings import PostgresSettings, load_postgres_settings
from operator_service.tools.folder_lock import live_owner
from operator_service.tools.launcher import (
    DEFAULT_BIND,
    DEFAULT_DATA_DIR,
    DEFAULT_DATABASE,
    DEFAULT_EMBEDDED_PORT,
    StartupError,
    parse_bind,
)

URL_FILE = "api-url"


@dataclass(frozen=True)
class ServiceUrl:
    url: str
    source: str  # where the URL came from, for messages: "--url", "OPERATOR_BIND", ...


def url_for_bind(bind: str, variable: str = "OPERATOR_BIND") -> str:
    """The http URL that reaches a server listening on `bind` (HOST:PORT, as gunicorn reads it)."""
    address = parse_bind(bind)
    if address.path is not None:
        raise ConfigError(
            f"{variable} is a Unix socket ({bind}), which the demo cannot call: give it an http URL"
            " with --url or DEMO_URL"
        )
    host, port = address.probe_address()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def check_url(url: str, source: str) -> str:
    """`url` if it is an http(s) URL with a host; ConfigError naming `source` otherwise."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(f"{source} must be an http URL such as http://127.0.0.1:8050, got {url!r}")
    return url.rstrip("/")


def record(data_dir: Path, bind: str) -> None:
    """Write the URL of the API listening on `bind` into `data_dir` (replacing any earlier one)."""
    target = data_dir / URL_FILE
    partial = target.with_name(URL_FILE + ".new")
    try:
        url = url_for_bind(bind)
    except ConfigError:
        url = ""  # a Unix socket: no URL to record
    partial.write_text(url + "\n" if url else "")
    partial.replace(target)


def forget(data_dir: Path) -> None:
    (data_dir / URL_FILE).unlink(missing_ok=True)


def recorded(data_dir: Path) -> str | None:
    """The URL the launcher running on `data_dir` recorded; None if none runs there."""
    if live_owner(data_dir) is None:
        return None
    try:
        url = (data_dir / URL_FILE).read_text().strip()
    except OSError:
        return None
    return url or None


def find(given: str | None, env: Mapping[str, str] | None = None) -> ServiceUrl:
    """The service's URL, by the order in this module's docstring; ConfigError if the one chosen is unusable."""
    env = os.environ if env is None else env
    if given:
        return ServiceUrl(check_url(given, "--url"), "--url")
    if env.get("DEMO_URL"):
        return ServiceUrl(check_url(env["DEMO_URL"], "DEMO_URL"), "DEMO_URL")
    if env.get("OPERATOR_BIND"):
        return ServiceUrl(url_for_bind(env["OPERATOR_BIND"]), "OPERATOR_BIND")
    data_dir = Path(env.get("OPERATOR_DATA_DIR") or DEFAULT_DATA_DIR)
    url = recorded(data_dir)
    if url:
        return ServiceUrl(url, f"the operator-service run using {data_dir}")
    return ServiceUrl(url_for_bind(DEFAULT_BIND), "the default of make run")


def database(env: Mapping[str, str] | None = None) -> tuple[PostgresSettings, str]:
    """The database of this machine's service, by the order in this module's docstring, and where
    it is, for messages. StartupError if there is none to use; ConfigError for a bad variable."""
    env = os.environ if env is None else env
    settings = load_postgres_settings(env)
    if settings.host:
        return settings, f"{settings.host}:{settings.port}/{settings.database or '(default database)'}"
    from operator_service.tools.embedded_db import PASSWORD_FILE, SUPERUSER

    folder = Path(env.get("OPERATOR_DATA_DIR") or DEFAULT_DATA_DIR) / "postgres"
    password = settings.password
    if password is None:
        try:
            password = (folder / PASSWORD_FILE).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            raise StartupError(
                f"POSTGRES_HOST is not set and {folder} holds no embedded database: start make run"
                " (or point OPERATOR_DATA_DIR at its folder), or set POSTGRES_HOST and the other POSTGRES_*"
            ) from None
    port = env_int(env, "POSTGRES_PORT", DEFAULT_EMBEDDED_PORT, minimum=1)
    name = settings.database or DEFAULT_DATABASE
    embedded = PostgresSettings("127.0.0.1", port, settings.user or SUPERUSER, password, name, settings.timeout)
    return embedded, f"127.0.0.1:{port}/{name} (the embedded database in {folder})"
