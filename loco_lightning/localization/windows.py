"""Window builders: pure functions from a site count to the interventions a sweep evaluates."""

from __future__ import annotations


def windows(n_sites: int, m: int) -> list[tuple[int, ...]]:
    """Every window of exactly ``m`` consecutive sites, by start ``j = 0 … n_sites - m``.

    Raises:
        ValueError: ``m`` is not in ``1 … n_sites``.
    """
    if not 1 <= m <= n_sites:
        raise ValueError(
            f"Window size m={m} does not fit a model with {n_sites} cross-attention sites; "
            f"choose m in 1..{n_sites}."
        )
    return [tuple(range(j, j + m)) for j in range(n_sites - m + 1)]
