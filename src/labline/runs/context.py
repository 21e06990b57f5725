"""What a study asks of one run it contains, without the run knowing the study.

A sweep trial adds a reporting/pruning callback and its study and trial tags, an ablation its variant
tags, a cross-validation the fold: each is a ``RunContext`` handed down. The tags are also part of the
run's resume key, so a trial never resumes a killed run of another study that had the same config. A run
inside a study is ``quiet`` (its study prints one line for it); ``kind`` prefixes the default run name of a
run that repeats an ad-hoc one's config (``dvc``, ``reproduce``).
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
    quiet: bool = False
    kind: str = ""

    def with_tags(self, **tags: str) -> RunContext:
        return RunContext({**self.tags, **tags}, self.callbacks, self.start_from, self.quiet, self.kind)


NO_CONTEXT = RunContext()
