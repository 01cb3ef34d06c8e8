"""The fused, chunked label-smoothed cross-entropy (speed/fused_ce.py) against the reference composition."""

from __future__ import annotations

import pytest
import torch

from ofa_lightning.speed.fused_ce import fused_smoothed_ce
from ofa_lightning.training.loss import LossConfig, adjusted_label_smoothed_ce


def _case(n=23, v=300, dtype=torch.float32, masked=False, weighted=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).to(dtype).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    w = torch.rand(n, generator=g) + 0.5 if weighted else None
    m = None
    if masked:
        m = torch.rand(n, v, generator=g) < 0.2
        m[0] = False  # a row where only the target is allowed: zero loss, zero gradient
    return x, t, w, m


def _value_and_grad(fn, x, g_loss, g_nll):
    loss, nll, kept = fn()
    ((loss.double() * g_loss[kept]).sum() + (nll.double() * g_nll[kept]).sum()).backward()
    grad, x.grad = x.grad.clone(), None
    return loss.detach(), nll.detach(), kept, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_fused_matches_reference_values_and_gradients(dtype, masked, weighted, drop):
    x, t, w, m = _case(dtype=dtype, masked=masked, weighted=weighted)
    g = torch.Generator().manual_seed(1)
    g_loss, g_nll = torch.randn(x.shape[0], generator=g), torch.randn(x.shape[0], generator=g)
    ref = _value_and_grad(lambda: adjusted_label_smoothed_ce(x, t, 0.1, w, m, drop, fused=False), x, g_loss, g_nll)
    new = _value_and_grad(lambda: adjusted_label_smoothed_ce(x, t, 0.1, w, m, drop, fused=True), x, g_loss, g_nll)
    assert torch.equal(ref[2], new[2])  # the same tokens dropped
    torch.testing.assert_close(new[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new[1], ref[1], rtol=1e-5, atol=1e-5)
    assert new[3].dtype == dtype  # the gradient comes back in the logits' dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: one rounding of the gradient itself
    torch.testing.assert_close(new[3].float(), ref[3].float(), rtol=tol, atol=tol)
    if masked:
        if drop == 0.0:  # row 0 allows only its target: zero loss (with drop_worst the rows come back reordered)
            assert float(new[0][0]) == pytest.approx(0.0, abs=1e-6)
        allowed = m.clone()
        allowed[torch.arange(len(t)), t] = True
        assert (new[3][~allowed] == 0).all()  # disallowed tokens get no gradient


@pytest.mark.parametrize("chunk_rows", [1, 5, 23, 64])
def test_chunking_does_not_change_the_result(chunk_rows):
    x, t, w, m = _case(dtype=torch.float64, masked=True, weighted=True)
    loss, nll = fused_smoothed_ce(
        x, t, 0.1, w, m | torch.nn.functional.one_hot(t, x.shape[1]).bool(), chunk_rows=chunk_rows
    )
    (loss.sum() + 0.5 * nll.sum()).backward()
    grad, x.grad = x.grad.clone(), None
    loss1, nll1 = fused_smoothed_ce(x, t, 0.1, w, m | torch.nn.functional.one_hot(t, x.shape[1]).bool(), chunk_rows=7)
    (loss1.sum() + 0.5 * nll1.sum()).backward()
    torch.testing.assert_close(loss, loss1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64_masked_and_weighted():
    x, t, w, m = _case(n=6, v=11, dtype=torch.float64, masked=True, weighted=True, seed=3)
    allowed = m.clone()
    allowed[torch.arange(len(t)), t] = True

    def f(logits):
        loss, nll = fused_smoothed_ce(logits, t, 0.2, w, allowed, chunk_rows=4)
        return loss, nll

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)


def test_backward_leaves_the_logits_untouched():
    # fp32 logits need no cast, so a careless in-place softmax in backward would overwrite them
    x, t, _, _ = _case(dtype=torch.float32)
    before = x.detach().clone()
    loss, _ = fused_smoothed_ce(x, t, 0.1)
    loss.sum().backward()
    assert torch.equal(x.detach(), before)


def _saved_bytes(fn, exclude: torch.Tensor) -> int:
    """Bytes of distinct storages autograd saves while ``fn`` runs, not counting ``exclude``'s storage."""
    seen: dict[int, int] = {}
    skip = exclude.untyped_storage().data_ptr()

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() != skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def test_fused_saves_no_vocabulary_sized_copies():
    n, v = 40, 5000
    x = torch.randn(n, v, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, v, (n,))
    full_fp32 = n * v * 4
    ref = _saved_bytes(lambda: adjusted_label_smoothed_ce(x, t, 0.1, fused=False), x)
    fused = _saved_bytes(lambda: adjusted_label_smoothed_ce(x, t, 0.1, fused=True), x)
    assert ref >= full_fp32  # the reference keeps at least the fp32 log-probabilities
    assert fused < full_fp32 / 50  # the fused node keeps the logits themselves (excluded) and O(N) vectors


def test_bad_arguments_are_refused():
    x = torch.randn(3, 5)
    with pytest.raises(ValueError, match="expected target"):
        fused_smoothed_ce(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="expected logits"):
        fused_smoothed_ce(x[0], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="expected allowed"):
        fused_smoothed_ce(x, torch.zeros(3, dtype=torch.long), allowed=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_rows"):
        fused_smoothed_ce(x, torch.zeros(3, dtype=torch.long), chunk_rows=0)


def test_loss_config_switch_and_empty_batch():
    assert LossConfig().fused is None and LossConfig.from_any({"fused": False}).fused is False
    x = torch.randn(0, 7, requires_grad=True)
    loss, nll, kept = adjusted_label_smoothed_ce(x, torch.zeros(0, dtype=torch.long), 0.1)
    assert loss.shape == (0,) and kept.numel() == 0
    loss.sum().backward()
    assert x.grad.shape == (0, 7)
