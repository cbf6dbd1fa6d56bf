"""The LocoEdit solve: a ridge regression of a key/value projection, in closed form."""

from __future__ import annotations

import torch
from torch import Tensor


def edit_factor(
    x: Tensor,
    y: Tensor,
    lam: float,
    preserve: Tensor | None = None,
    preserve_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The right factor M of the edit, so that the edited weight is ``W = Ŵ M``.

    Solves, for every weight Ŵ at once (M depends only on the text embeddings):

        min_W  Σ_i ‖W x_i − Ŵ y_i‖² + α Σ_j ‖W p_j − Ŵ p_j‖² + λ ‖W − Ŵ‖²_F
        ⇒  W = Ŵ (λI + Σ y xᵀ + α Σ p pᵀ)(λI + Σ x xᵀ + α Σ p pᵀ)⁻¹

    in ``dtype`` (float32 unless asked; float64 removes float32's ~3e-4 rounding for the same
    milliseconds) with ``torch.linalg.solve`` (no explicit inverse), whatever the model's dtype
    and torch's default dtype.

    Args:
        x: (n, d) inputs the edit remaps (the concept's token embeddings at a site).
        y: (n, d) inputs whose outputs they should now produce (the target's).
        lam: ridge strength λ > 0: how strongly the weight stays where it was.
        preserve: (k, d) inputs whose outputs must not move, or None.
        preserve_scale: α, the weight of the preserve term against the edit term (a preserve set
            of many prompts otherwise outvotes a concept's few templates).

        dtype: the dtype of the solve.

    Returns:
        (d, d) factor M in ``dtype``.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be (n, d); got {tuple(x.shape)} and {tuple(y.shape)}")
    if lam <= 0:
        raise ValueError(f"lambda must be > 0 for a unique solution, got {lam}")
    x, y = x.to(dtype), y.to(dtype)
    eye = torch.eye(x.shape[1], device=x.device, dtype=dtype)
    a = lam * eye + x.T @ x  # (d, d), symmetric positive definite
    b = lam * eye + y.T @ x  # (d, d): Σ y xᵀ
    if preserve is not None:
        p = preserve.to(dtype)
        a = a + preserve_scale * (p.T @ p)
        b = b + preserve_scale * (p.T @ p)
    # M = B A⁻¹  ⇔  Mᵀ = A⁻ᵀ Bᵀ = solve(A, Bᵀ) since A is symmetric
    return torch.linalg.solve(a, b.T).T


def edited_weight(weight: Tensor, factor: Tensor) -> Tensor:
    """``Ŵ M`` in the factor's dtype, returned in the weight's. weight: (out, d); factor: (d, d)."""
    return (weight.to(factor.dtype) @ factor).to(weight.dtype)
