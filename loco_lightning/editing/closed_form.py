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
    keep: Tensor | None = None,
    keep_rtol: float = 0.0,
) -> Tensor:
    """The right factor M of the edit, so that the edited weight is ``W = Ŵ M``.

    Solves, for every weight Ŵ at once (M depends only on the text embeddings):

        min_W  Σ_i ‖W x_i − Ŵ y_i‖² + α Σ_j ‖W p_j − Ŵ p_j‖² + λ ‖W − Ŵ‖²_F
        ⇒  W = Ŵ (λI + Σ y xᵀ + α Σ p pᵀ)(λI + Σ x xᵀ + α Σ p pᵀ)⁻¹ = Ŵ (I + C A⁻¹)

    with C = Σ (y − x) xᵀ and A the second factor. With ``keep``, subject to W k = Ŵ k exactly
    for every keep input k (the empty prompt that classifier-free guidance subtracts: a soft
    preserve term only shrinks its drift): the update is confined to the orthogonal complement
    of their span, with U an orthonormal basis of it, M = I + C U (Uᵀ A U)⁻¹ Uᵀ (which is
    I + C A⁻¹ when nothing is kept). Directions of the kept span whose singular value is below
    ``keep_rtol`` times the largest are left free (the kept inputs hardly reach into them), so a
    model whose text width is below its context length (77 tokens of width 32) still has room to
    edit.

    In ``dtype`` (float32 unless asked; float64 removes float32's ~3e-4 rounding for the same
    milliseconds) with ``torch.linalg.solve`` (no explicit inverse), whatever the model's dtype
    and torch's default dtype.

    Args:
        x: (n, d) inputs the edit remaps (the concept's token embeddings at a site).
        y: (n, d) inputs whose outputs they should now produce (the target's).
        lam: ridge strength λ > 0: how strongly the weight stays where it was.
        preserve: (k, d) inputs whose outputs should not move, or None.
        preserve_scale: α, the weight of the preserve term against the edit term (a preserve set
            of many prompts otherwise outvotes a concept's few templates).
        dtype: the dtype of the solve.
        keep: (m, d) inputs whose outputs must not move at all, or None.
        keep_rtol: relative singular-value threshold of the kept span (0: its numerical rank).

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
    if keep is None:
        # M = B A⁻¹  ⇔  Mᵀ = A⁻ᵀ Bᵀ = solve(A, Bᵀ) since A is symmetric
        return torch.linalg.solve(a, b.T).T
    c = b - a  # Σ (y − x) xᵀ
    u = complement_basis(keep.to(dtype), keep_rtol)  # (d, d − r)
    if u.shape[1] == 0:
        raise ValueError(
            f"the {keep.shape[0]} kept inputs span all {keep.shape[1]} input dimensions above "
            f"keep_rtol={keep_rtol}, so no update can keep them; raise keep_rtol (e.g. 1e-2) or "
            "turn keep_empty off"
        )
    reduced = torch.linalg.solve(u.T @ a @ u, (c @ u).T).T  # C U (Uᵀ A U)⁻¹: (d, d − r)
    return eye + reduced @ u.T


def complement_basis(rows: Tensor, rtol: float = 0.0) -> Tensor:
    """(d, d − r) orthonormal basis of the orthogonal complement of the span of ``rows`` (m, d),
    r the number of singular values above ``rtol`` times the largest (at least the numerical
    rank's threshold, the dtype's epsilon times max(m, d), as ``torch.linalg.matrix_rank``)."""
    rank, vh = _split(rows, rtol)
    return vh[rank:].T


def span_basis(rows: Tensor, rtol: float = 0.0) -> Tensor:
    """(d, r) orthonormal basis of the span of ``rows`` (m, d): what :func:`complement_basis`
    leaves out, with the same rank."""
    rank, vh = _split(rows, rtol)
    return vh[:rank].T


def _split(rows: Tensor, rtol: float) -> tuple[int, Tensor]:
    """(rank above ``rtol``, right singular vectors (d, d)) of ``rows``."""
    _, s, vh = torch.linalg.svd(rows, full_matrices=True)
    rtol = max(rtol, torch.finfo(rows.dtype).eps * max(rows.shape))
    rank = int((s > rtol * s.max()).sum()) if s.numel() and s.max() > 0 else 0
    return rank, vh


def edited_weight(weight: Tensor, factor: Tensor) -> Tensor:
    """``Ŵ M`` in the factor's dtype, returned in the weight's. weight: (out, d); factor: (d, d)."""
    return (weight.to(factor.dtype) @ factor).to(weight.dtype)


def weight_delta(weight: Tensor, factor: Tensor) -> Tensor:
    """``Ŵ M − Ŵ`` as an edit stores it: the edited weight in the weight's dtype minus the
    weight, the difference taken in the factor's dtype and returned in the weight's."""
    exact = factor.dtype
    return (edited_weight(weight, factor).to(exact) - weight.to(exact)).to(weight.dtype)
