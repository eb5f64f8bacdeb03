"""Where the service of this machine answers, for the commands that call it (`operator-service demo`).

`operator-service run` records the URL of its API in its data folder (URL_FILE) while it runs,
so a client finds the service however the launcher was told where to listen. A client takes,
in this order:

1. the URL it was given (`--url`; `make demo URL=...`);
2. DEMO_URL;
3. OPERATOR_BIND, the variable `make run` listens on (a wildcard host is reached through loopback);
4. the URL recorded by the launcher that runs on OPERATOR_DATA_DIR (default `.operator-data`),
   which is how `operator-service run --bind ...` is found;
5. http://127.0.0.1:8050, the default of `make run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from operator_service.env_vars import ConfigError
from operator_service.tools.folder_lock import live_owner
from operator_service.tools.launcher import DEFAULT_BIND, DEFAULT_DATA_DIR, parse_bind

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
