"""Clean stops on SIGINT / SIGTERM.

Lightning turns a KeyboardInterrupt into ``sys.exit(1)``, which would leave
MLflow unable to tell a user's Ctrl-C from a crash. labline raises its own
``Interrupted`` instead: Lightning passes it to the callbacks' ``on_exception``
(where the resumable checkpoint is written) and re-raises it; the tracker
marks the run KILLED; the CLI exits with 128 + signal number (130, 143).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(BaseException):  # noqa: N818 - it is a signal, not an error
    """Raised in the main thread when SIGINT or SIGTERM arrives during training."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def graceful_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` for the duration of the block."""

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
