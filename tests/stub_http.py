"""Stub HTTP servers on 127.0.0.1, each in a thread of the test process, and the result store stub.

`StubServer(handler)` serves one BaseHTTPRequestHandler class; `http_stub(handler)` (a fixture)
starts one and stops it after the test. `storage` is an upstream result store (an IPFS gateway,
S3) that records the headers it gets; `allowing(url, ...)` is the RESULT_URL_PREFIXES that lets
the service fetch from it. Loaded as a pytest plugin (conftest.py).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

import pytest

POLL_SECONDS = 0.01  # how soon a stopped server notices (serve_forever's default is 0.5 s)


class StubServer(ThreadingHTTPServer):
    """`handler` on a free port of 127.0.0.1, served by a daemon thread until `close()`, which also
    waits for the requests still being answered."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True)
        self._thread.start()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up in DNS, which can stall in a sandbox.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # else the client left before its answer
            super().handle_error(request, client_address)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


@pytest.fixture
def http_stub() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    """Start stub servers (by handler class); their base URLs. Every one is stopped after the test."""
    servers: list[StubServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        servers.append(StubServer(handler))
        return servers[-1].url

    yield start
    for server in servers:
        server.close()


STORED = b"line one\nline two\n"


class Storage(BaseHTTPRequestHandler):
    """An upstream result store that records the headers it gets.

    /redirect/<path> redirects to <path>; /slow... answers after 2 s; /missing... is a 404;
    /named... names its file in Content-Disposition; anything else is STORED (its first 4 bytes,
    206, for a Range request)."""

    seen: list[dict] = []

    def do_GET(self) -> None:
        Storage.seen.append({"path": self.path, **dict(self.headers)})
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect/"))
            self.end_headers()
            return
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        if self.path.startswith("/missing"):
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"not here")
            return
        body = STORED[:4] if "Range" in self.headers else STORED
        self.send_response(206 if "Range" in self.headers else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/named"):
            self.send_header("Content-Disposition", 'attachment; filename="renamed.txt"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def storage(http_stub) -> str:
    """The base URL of a fresh Storage (its `seen` emptied)."""
    Storage.seen = []
    return http_stub(Storage)


def allowing(*prefixes: str) -> dict[str, str]:
    """RESULT_URL_PREFIXES that lets the service fetch results from under each of `prefixes`."""
    return {"RESULT_URL_PREFIXES": json.dumps([prefix + "/" for prefix in prefixes])}
