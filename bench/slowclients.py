"""Slow and idle clients: connections that hold a server's attention while sending (almost) nothing.

`SlowClients(port, mode, count)` keeps `count` connections open to 127.0.0.1:port from a
thread of its own, for as long as it runs:

- `idle`: connect and send nothing;
- `slowloris`: send a request line, then one header byte every SLOWLORIS_INTERVAL seconds,
  never ending the headers.

A connection the server closes (a 408, say) is opened again at once, so the server faces
`count` such connections all the time; `reopened` counts how often that happened.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

MODES = ("idle", "slowloris")
SLOWLORIS_INTERVAL = 2.0
REQUEST_LINE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
# Header lines sent one byte at a time, over and over: the head never ends.
DRIP = b"X-Slow: a\r\n"


class SlowClients:
    def __init__(self, port: int, mode: str, count: int = 32):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.port = port
        self.mode = mode
        self.count = count
        self.reopened = 0
        self.open_now = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()
        self._dripped: dict[socket.socket, int] = {}
        self._next_drip = 0.0

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, settle_seconds: float = 10.0) -> SlowClients:
        """Open the connections; return once all are open (or after `settle_seconds`)."""
        self._thread = threading.Thread(target=self._run, name=f"slow-clients-{self.mode}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + settle_seconds
        while self.open_now < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            for _ in range(self.count):
                self._open()
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.1):
                    self._on_readable(key.fileobj)
                if self.mode == "slowloris" and time.monotonic() >= self._next_drip:
                    self._drip()
        finally:
            for sock in list(self._dripped):
                self._forget(sock)
            self._selector.close()

    def _open(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            time.sleep(0.05)
            return
        sock.setblocking(False)
        if self.mode == "slowloris":
            try:
                sock.send(REQUEST_LINE)
            except OSError:
                sock.close()
                return
        self._selector.register(sock, selectors.EVENT_READ)
        self._dripped[sock] = 0
        self.open_now += 1

    def _on_readable(self, sock: socket.socket) -> None:
        """The server answered (a 408) or closed: this connection is replaced by a new one."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # read the answer; the close follows
        self._forget(sock)
        self.reopened += 1
        if not self._stop.is_set():
            self._open()

    def _drip(self) -> None:
        self._next_drip = time.monotonic() + SLOWLORIS_INTERVAL
        for sock, sent in list(self._dripped.items()):
            try:
                sock.send(DRIP[sent % len(DRIP) :][:1])
                self._dripped[sock] = sent + 1
            except OSError:
                pass

    def _forget(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._dripped[sock]
        sock.close()
        self.open_now -= 1
