"""The gunicorn worker of the service: a thread serves a request only once all of it has arrived.

gunicorn's sync worker blocks on one connection until its request arrives, so two idle
connections stall two workers. Its threaded worker (gthread) waits up to 5 s for a new
connection's first byte, then reads the request in a thread with no time limit, so a
client sending one header byte every few seconds holds a thread for as long as it likes.
Without a buffering proxy in front (in a cluster the Provider reaches the service through
a plain Service), slow and idle clients could take every worker.

`RequestBufferingWorker` is gthread with the reading moved into its event loop, the way a
buffering proxy (nginx) reads for its upstream: the loop reads every connection without
blocking until the request line, the headers and the body (by Content-Length, or chunked)
are all there, and only then hands the connection to a thread. A slow or idle client
costs a socket and a buffer, never a thread. A request not complete within
OPERATOR_REQUEST_TIMEOUT seconds of its connection is answered 408 and closed; a head
larger than MAX_HEAD_BYTES is answered 431. In a thread, each wait on the client's
socket (for it to take part of the answer, or for a part of the request that was not
buffered) is limited to the same number of seconds, so no client keeps a thread for long.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from collections import deque
from functools import partial

from gunicorn import http, util
from gunicorn.workers.gthread import TConn, ThreadWorker

from operator_service.env_vars import ConfigError, env_number

DEFAULT_REQUEST_TIMEOUT = 10.0
# The most a request line and its headers may take; gunicorn's own limits (request
# line, number and size of fields) then apply to what is handed on.
MAX_HEAD_BYTES = 64 * 1024
# A body longer than the app accepts (app.MAX_REQUEST_BYTES) is not buffered: its
# request goes to a thread at once, and the app answers 413 without reading it.
MAX_BODY_BYTES = 1024 * 1024
RECV_BYTES = 64 * 1024
HEAD_END = b"\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientSocket(socket.socket):
    """A client connection whose blocking mode waits at most `wait_seconds` for the client."""

    wait_seconds: float | None = None

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.wait_seconds)
        else:
            super().setblocking(False)


class PendingRequest:
    """What has arrived of one request, and whether it is all there."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.data = bytearray()
        self.head_end = -1  # offset of the body, once the head is complete
        self.body_length: int | None = None  # Content-Length; None: no body, or chunked
        self.chunked = False
        self.next_chunk = -1  # offset of the next chunk's size line, once the head is complete
        self.expects_continue = False
        self.continue_sent = False

    def add(self, chunk: bytes) -> None:
        """Append what arrived; each byte is searched once, however the client splits its request."""
        searched = max(0, len(self.data) - len(HEAD_END) + 1)
        self.data += chunk
        if self.head_end < 0:
            end = self.data.find(HEAD_END, searched)
            if end >= 0:
                self.head_end = self.next_chunk = end + len(HEAD_END)
                self._read_framing(bytes(self.data[:end]))

    def _read_framing(self, head: bytes) -> None:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length" and value.strip().isdigit():
                self.body_length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                self.expects_continue = True

    @property
    def head_too_large(self) -> bool:
        return self.head_end < 0 and len(self.data) > MAX_HEAD_BYTES

    def complete(self) -> bool:
        """True once the thread will find the whole request in the buffer (or must take it as it is)."""
        if self.head_end < 0:
            return False
        body = len(self.data) - self.head_end
        if self.chunked:
            return body > MAX_BODY_BYTES or self._chunks_complete()
        if self.body_length is None:
            return True
        return self.body_length > MAX_BODY_BYTES or body >= self.body_length

    def _chunks_complete(self) -> bool:
        """Whether a chunked body has arrived up to its last chunk and trailers; the chunks
        already complete are not read again."""
        while True:
            line_end = self.data.find(b"\r\n", self.next_chunk)
            if line_end < 0:
                return False
            size_text = bytes(self.data[self.next_chunk : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return True  # malformed: gunicorn's parser answers it
            if size == 0:
                return self.data.find(HEAD_END, line_end) >= 0
            if line_end + 2 + size + 2 > len(self.data):
                return False
            self.next_chunk = line_end + 2 + size + 2


def request_timeout() -> float:
    """OPERATOR_REQUEST_TIMEOUT: seconds a client has to send its whole request."""
    return env_number(os.environ, "OPERATOR_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT, 0.1)


WAITING, COMPLETE, TOO_LARGE, CLOSED = "waiting", "complete", "too large", "closed"


def _plain_answer(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


class BufferedConn(TConn):
    """A connection of the worker: what has arrived of its request, and a close that never waits."""

    def __init__(self, cfg, sock: ClientSocket, client, server):
        super().__init__(cfg, sock, client, server)
        self.pending: PendingRequest | None = None

    @property
    def request(self) -> PendingRequest:
        """The request the event loop is reading (only while it reads one)."""
        if self.pending is None:
            raise RuntimeError("no request is being read on this connection")
        return self.pending

    def close(self, graceful: bool = False) -> None:
        """Close at once, dropping whatever the client sent after its request.

        gunicorn's graceful close waits up to 2 s for the client to close first, on the
        loop's own thread: a client that never closes would stall the whole worker. The
        request was read in full before it was served, so a client that keeps to HTTP has
        nothing left to send.
        """
        if graceful:
            self._drop_unread()
        util.close(self.sock)

    def _drop_unread(self) -> None:
        """Read and drop what has already arrived (at most RECV_BYTES), without waiting."""
        try:
            self.sock.setblocking(False)
            self.sock.recv(RECV_BYTES)
        except OSError:
            pass


class RequestBufferingWorker(ThreadWorker):
    """gthread whose event loop reads each request in full before a thread serves it."""

    @classmethod
    def check_config(cls, cfg, log) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or "h2" in cfg.http_protocols:
            raise ConfigError("the request-buffering worker serves plain HTTP/1.x: terminate TLS and HTTP/2 in front")
        request_timeout()

    def init_process(self) -> None:
        self.request_timeout = request_timeout()
        self.reading: deque[BufferedConn] = deque()  # connections still sending, oldest first
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        try:
            accepted, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client = ClientSocket(accepted.family, accepted.type, accepted.proto, fileno=accepted.detach())
        client.wait_seconds = self.request_timeout
        self._start_reading(BufferedConn(self.cfg, client, address, listener.getsockname()))

    def on_client_socket_readable(self, conn: BufferedConn, client: socket.socket) -> None:
        """A kept-alive connection's next request is read like a new connection's."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn)

    def _start_reading(self, conn: BufferedConn) -> None:
        conn.sock.setblocking(False)
        conn.pending = PendingRequest(time.monotonic() + self.request_timeout)
        outcome = self._read_some(conn)
        if outcome is WAITING:
            self.reading.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        else:
            self._finish_reading(conn, outcome)

    def _on_readable(self, conn: BufferedConn, client: socket.socket) -> None:
        outcome = self._read_some(conn)
        if outcome is not WAITING:
            self.poller.unregister(client)
            self.reading.remove(conn)
            self._finish_reading(conn, outcome)

    def _read_some(self, conn: BufferedConn) -> str:
        """Read what has arrived: WAITING, COMPLETE, TOO_LARGE or CLOSED."""
        pending = conn.request
        try:
            chunk = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return WAITING
        except OSError:
            return CLOSED
        if not chunk:
            return CLOSED
        pending.add(chunk)
        if pending.head_too_large:
            return TOO_LARGE
        if pending.complete():
            return COMPLETE
        if pending.expects_continue and not pending.continue_sent:
            pending.continue_sent = True
            self._send_quietly(conn, CONTINUE)
        return WAITING

    def _finish_reading(self, conn: BufferedConn, outcome: str) -> None:
        if outcome is COMPLETE:
            self._hand_on(conn)
        elif outcome is TOO_LARGE:
            self._refuse(conn, "431 Request Header Fields Too Large", "Request header fields too large")
        else:
            self._close(conn)

    def _hand_on(self, conn: BufferedConn) -> None:
        """Give the connection to a thread, with a parser that finds the buffered request first."""
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.request.data))
        conn.pending = None
        conn.initialized = True
        conn.data_ready = True
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        """Also answer 408 to the connections whose request is not complete by its deadline."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].request.deadline <= now:
            conn = self.reading.popleft()
            self.poller.unregister(conn.sock)
            self._refuse(conn, "408 Request Timeout", f"Request not received within {self.request_timeout:g} s")

    def _refuse(self, conn: BufferedConn, status: str, message: str) -> None:
        self._send_quietly(conn, _plain_answer(status, message))
        self._close(conn)

    @staticmethod
    def _send_quietly(conn: BufferedConn, data: bytes) -> None:
        """Best effort, without blocking: a client that does not read its answer does not get it."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _close(self, conn: BufferedConn) -> None:
        self.nr_conns -= 1
        conn.close()
