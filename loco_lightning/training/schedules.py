"""Learning-rate schedules shared by the world trainers."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(
    warmup_steps: int, total_steps: int, min_ratio: float = 0.1, decay: bool = True
) -> Callable[[int], float]:
    """``LambdaLR`` factor: linear warm-up, then cosine decay to ``min_ratio`` at ``total_steps``.

    Short from-scratch runs need the warm-up (AdamW's first steps are large) and finish better
    with the decay; ``decay=False`` keeps the peak rate after warm-up.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not decay:
            return 1.0
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
