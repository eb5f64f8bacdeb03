"""The API's log handler (BatchingStreamHandler): lines below WARNING go out together, a
WARNING at once after them, and nothing pending is lost when the process exits."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from operator_service.logging_setup import BatchingStreamHandler
from tests.waiting import wait_for


class RecordedWrites(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of the test's own, which hands its lines to no other handler."""
    logger = logging.getLogger(f"test.batches.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def test_lines_below_warning_wait_for_their_batch_and_a_warning_goes_out_at_once_after_them(logger):
    stream = RecordedWrites()
    logger.addHandler(BatchingStreamHandler(stream, interval=3600))
    logger.info("one")
    logger.debug("two")
    assert stream.writes == []
    logger.warning("three")
    assert stream.writes == ["one\ntwo\nthree\n"]
    logger.error("four")
    assert stream.writes[-1] == "four\n"


def test_a_batch_goes_out_within_the_interval_in_one_write_and_in_order(logger):
    stream = RecordedWrites()
    logger.addHandler(BatchingStreamHandler(stream, interval=0.2))
    for n in range(200):
        logger.info("line %d", n)
    wait_for(lambda: stream.getvalue().count("\n") == 200, "the batch")
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(200)]
    assert len(stream.writes) < 10


def test_a_process_that_exits_writes_what_it_had_pending():
    code = (
        "import logging\n"
        "from operator_service.logging_setup import LoggingSettings, setup_logging\n"
        "setup_logging(LoggingSettings('INFO', None, 'json'), batched=True)\n"
        "for n in range(1000):\n"
        "    logging.getLogger('test').info('line %d', n)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["message"] for line in done.stderr.splitlines()] == [f"line {n}" for n in range(1000)]
