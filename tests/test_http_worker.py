"""The request-buffering worker's reading: when a request counts as complete, however it arrives."""

from __future__ import annotations

from operator_service.api.http_worker import MAX_BODY_BYTES, MAX_HEAD_BYTES, PendingRequest

HEAD = b"POST /api/v1/operator/compute HTTP/1.1\r\nHost: x\r\n"


def _fed(*pieces: bytes) -> PendingRequest:
    pending = PendingRequest(deadline=0)
    for piece in pieces:
        pending.add(piece)
    return pending


def _bytewise(data: bytes) -> list[PendingRequest]:
    """The request fed one byte at a time; its state after each byte."""
    pending = PendingRequest(deadline=0)
    states = []
    for index in range(len(data)):
        pending.add(data[index : index + 1])
        states.append(pending.complete())
    return states


def test_a_request_without_body_is_complete_with_its_last_header_byte():
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _bytewise(request) == [False] * (len(request) - 1) + [True]


def test_a_body_by_content_length_is_complete_with_its_last_byte():
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    assert _bytewise(request) == [False] * (len(request) - 1) + [True]


def test_a_chunked_body_is_complete_only_after_its_last_chunk_and_trailers():
    body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body
    assert _bytewise(request) == [False] * (len(request) - 1) + [True]
    assert not _fed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n").complete()


def test_a_body_larger_than_the_app_accepts_is_handed_on_with_the_head():
    """The app answers 413 without reading it: buffering a body it refuses would only cost memory."""
    assert _fed(HEAD + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()).complete()


def test_a_head_larger_than_the_limit_is_flagged():
    pending = _fed(HEAD + b"X-Big: " + b"a" * MAX_HEAD_BYTES)
    assert pending.head_too_large and not pending.complete()
    assert not _fed(HEAD + b"X-Small: a\r\n\r\n").head_too_large


def test_expect_100_continue_is_noticed():
    assert _fed(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n").expects_continue
    assert not _fed(HEAD + b"Content-Length: 5\r\n\r\n").expects_continue
