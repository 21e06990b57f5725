"""What a study asks of one run it contains, without the run knowing the study.

A sweep trial adds a reporting/pruning callback and its study and trial tags, an ablation its variant
tags, a cross-validation the fold: each is a ``RunContext`` handed down. The tags are also part of the
run's resume key, so a trial never resumes a killed run of another study that had the same config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunContext:
    tags: dict[str, str] = field(default_factory=dict)
    callbacks: Sequence[Any] = ()  # Lightning callbacks (a runner task, which has no trainer, ignores them)
    # A checkpoint a new run continues from: a retried sweep trial picks up where its killed predecessor stopped.
    start_from: Path | None = None

    def with_tags(self, **tags: str) -> RunContext:
        return RunContext({**self.tags, **tags}, self.callbacks, self.start_from)


NO_CONTEXT = RunContext()
