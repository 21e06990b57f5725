"""Similarity between embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` x ``(M, D)`` -> ``(N, M)`` cosines, every row of ``a`` against every row of ``b``.

    ``torch.nn.functional.cosine_similarity`` pairs rows one to one; metric heads
    (query vs class prototypes) and retrieval need the full matrix.
    """
    return F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T
