"""The ridge solve against an independent NumPy least-squares solution of the same objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loco_lightning.editing.closed_form import edit_factor, edited_weight


def numpy_solution(w_hat, x, y, lam, p=None, alpha=1.0):
    """Stack the objective as one least-squares problem in W (row by row) and solve it."""
    d = x.shape[1]
    rows_in = [x, np.sqrt(lam) * np.eye(d)]
    rows_out = [y @ w_hat.T, np.sqrt(lam) * w_hat.T]  # targets for W x: Ŵ y; for √λ W: √λ Ŵ
    if p is not None:
        rows_in.append(np.sqrt(alpha) * p)
        rows_out.append(np.sqrt(alpha) * p @ w_hat.T)
    a, b = np.vstack(rows_in), np.vstack(rows_out)
    w_t, *_ = np.linalg.lstsq(a, b, rcond=None)
    return w_t.T


@pytest.mark.parametrize(("with_preserve", "alpha"), [(False, 1.0), (True, 1.0), (True, 0.2)])
@pytest.mark.parametrize("lam", [0.01, 0.5, 10.0])
def test_matches_numpy_least_squares(lam, with_preserve, alpha):
    rng = np.random.default_rng(0)
    d, out, n = 12, 7, 5
    w_hat = rng.normal(size=(out, d))
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    p = rng.normal(size=(9, d)) if with_preserve else None
    expected = numpy_solution(w_hat, x, y, lam, p, alpha)
    t = torch.from_numpy
    factor = edit_factor(t(x), t(y), lam, None if p is None else t(p), alpha)
    ours = edited_weight(t(w_hat).float(), factor).double().numpy()
    assert np.abs(ours - expected).max() < 5e-4  # float32 solve; cond(A) ~ 1/lambda


def test_the_edit_maps_concept_inputs_to_the_target_outputs_when_lambda_is_small():
    torch.manual_seed(0)
    w_hat = torch.randn(6, 16)
    x, y = torch.randn(4, 16), torch.randn(4, 16)
    w = edited_weight(w_hat, edit_factor(x, y, 1e-6))
    assert torch.allclose(x @ w.T, y @ w_hat.T, atol=1e-3)


def test_preserved_inputs_keep_their_outputs():
    torch.manual_seed(1)
    w_hat = torch.randn(6, 16)
    x, y, p = torch.randn(3, 16), torch.randn(3, 16), torch.randn(5, 16)
    w = edited_weight(w_hat, edit_factor(x, y, 1e-6, p))
    assert torch.allclose(p @ w.T, p @ w_hat.T, atol=1e-3)


def test_half_precision_weights_are_solved_in_float32():
    torch.manual_seed(2)
    w_hat = torch.randn(6, 16).half()
    x, y = torch.randn(4, 16).half(), torch.randn(4, 16).half()
    factor = edit_factor(x, y, 0.1)
    assert factor.dtype == torch.float32
    assert edited_weight(w_hat, factor).dtype == torch.float16


def test_bad_shapes_and_lambda_are_refused():
    with pytest.raises(ValueError, match=r"must both be \(n, d\)"):
        edit_factor(torch.zeros(3, 4), torch.zeros(2, 4), 0.1)
    with pytest.raises(ValueError, match="lambda must be > 0"):
        edit_factor(torch.zeros(3, 4), torch.zeros(3, 4), 0.0)


def test_a_float64_solve_is_exact_and_works_under_a_float64_default_dtype():
    rng = np.random.default_rng(1)
    d, out, n = 12, 7, 5
    w_hat = rng.normal(size=(out, d))
    x, y, p = rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(9, d))
    expected = numpy_solution(w_hat, x, y, 0.01, p, 0.5)
    t = torch.from_numpy
    factor = edit_factor(t(x).float(), t(y).float(), 0.01, t(p).float(), 0.5, torch.float64)
    assert factor.dtype == torch.float64
    ours = edited_weight(t(w_hat), factor).numpy()
    assert np.abs(ours - expected).max() < 1e-6  # float32 inputs are the only rounding left
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # torch.eye follows the default dtype: the solve must not mix it with float32 inputs
        factor = edit_factor(t(x).float(), t(y).float(), 0.01, t(p).float(), 0.5)
    finally:
        torch.set_default_dtype(previous)
    assert factor.dtype == torch.float32
    assert np.abs(edited_weight(t(w_hat).float(), factor).double().numpy() - expected).max() < 5e-4


def penalty_solution(w_hat, x, y, lam, keep, p=None, alpha=1.0, beta=1e8):
    """The hard constraint W k = Ŵ k as the limit of an ever heavier preserve term (NumPy)."""
    rows = np.vstack([p, np.sqrt(beta / alpha) * keep]) if p is not None else keep
    return numpy_solution(w_hat, x, y, lam, rows, alpha if p is not None else beta)


@pytest.mark.parametrize("with_preserve", [False, True])
def test_kept_inputs_keep_their_outputs_exactly_and_the_rest_is_the_constrained_optimum(
    with_preserve,
):
    rng = np.random.default_rng(3)
    d, out, n = 12, 7, 5
    w_hat = rng.normal(size=(out, d))
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    p = rng.normal(size=(9, d)) if with_preserve else None
    keep = rng.normal(size=(2, 4)) @ rng.normal(size=(4, d))  # 2 rows...
    keep = np.vstack([keep, keep.sum(0, keepdims=True)])  # ...and a dependent third: rank 2
    t = torch.from_numpy
    factor = edit_factor(
        t(x), t(y), 0.1, None if p is None else t(p), 0.5, torch.float64, keep=t(keep)
    )
    ours = edited_weight(t(w_hat), factor).numpy()
    assert np.abs(keep @ ours.T - keep @ w_hat.T).max() < 1e-10  # exact, not approximately
    expected = penalty_solution(w_hat, x, y, 0.1, keep, p, 0.5)
    assert np.abs(ours - expected).max() < 1e-5
    # the constraint costs something: the unconstrained edit moves the kept outputs
    free = edited_weight(t(w_hat), edit_factor(t(x), t(y), 0.1, None, 0.5, torch.float64))
    assert np.abs(keep @ free.numpy().T - keep @ w_hat.T).max() > 1e-2


def test_keeping_inputs_orthogonal_to_the_edit_changes_nothing():
    torch.manual_seed(4)
    x, y = torch.zeros(3, 10, dtype=torch.float64), torch.zeros(3, 10, dtype=torch.float64)
    x[:, :5], y[:, :5] = torch.randn(3, 5), torch.randn(3, 5)  # the edit lives in dims 0-4
    keep = torch.zeros(4, 10, dtype=torch.float64)
    keep[:, 5:] = torch.randn(4, 5)  # kept inputs in dims 5-9
    free = edit_factor(x, y, 0.1, dtype=torch.float64)
    assert torch.allclose(edit_factor(x, y, 0.1, dtype=torch.float64, keep=keep), free)


def test_keeping_inputs_that_span_everything_is_refused():
    x = torch.randn(3, 6)
    with pytest.raises(ValueError, match="span all 6 input dimensions"):
        edit_factor(x, x + 1, 0.1, keep=torch.randn(8, 6))
