"""What every `operator-service` command shares on its command line: a wrong argument is one line.

argparse's own parser prints its usage and then the error; ours prints only the error, with
where to read the usage, so that every way a command can fail ends in one sentence. The
engine uses it too, so it lives beside env_vars.py rather than in tools/.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with wrong arguments reported in one line naming the command's --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value
