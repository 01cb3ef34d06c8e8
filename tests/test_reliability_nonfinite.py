"""Non-finite steps: detected at the step, skipped and counted, N in a row stop the run with the step and the
batch's tasks named; weights, optimiser state and EMA never take a NaN (fp32, and fp16 AMP with its GradScaler)."""

from __future__ import annotations

import pytest
import torch
from test_training_module import EXAMPLES, PAD, example, loader, make_module, trainer

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.training.guards import NonFiniteGuard, NonFiniteLossError, batch_task_counts

pytestmark = pytest.mark.usefixtures("one_thread")


def _bad_batch(task="words"):
    batch = collate_examples([example(i, [10 + i], [20 + i], task=task) for i in range(4)], PAD)
    batch["weights"] = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    return batch


def _fp16():
    """fp16 AMP with a GradScaler on CPU (Trainer(precision="16-mixed") would fall back to bf16 on CPU)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    return MixedPrecision("16-mixed", "cpu")


def _snapshot(module):
    return {k: v.clone() for k, v in module.model.state_dict().items()}


def _all_finite(module, optimizer=None):
    tensors = list(module.model.state_dict().values())
    if module.ema is not None:
        tensors += list(module.ema.shadow.values())
    if optimizer is not None:
        tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors if t.is_floating_point())


def test_n_consecutive_nonfinite_steps_stop_the_run_naming_step_and_tasks():
    torch.manual_seed(0)
    module = make_module(nonfinite={"max_consecutive": 3})
    good = collate_examples(EXAMPLES, PAD)
    before = _snapshot(module)
    t = trainer(max_steps=20)
    # bad, good (resets the run of skips), then bad forever: the 3rd bad in a row is step 4 (0-based)
    with pytest.raises(
        NonFiniteLossError,
        match=r"3 consecutive.*non-finite loss; the last at step 4, tasks in its "
        r"batch: words×4 \(non-finite loss in: words\)",
    ):
        t.fit(module, train_dataloaders=loader([_bad_batch(), good, _bad_batch(), _bad_batch(), _bad_batch()], 5))
    assert module.skipped_nonfinite == 4 and module.nonfinite.consecutive == 3
    assert module.nonfinite.last == {"step": 4, "what": "loss", "tasks": {"words": 4}, "nonfinite_tasks": ["words"]}
    assert t.global_step == 4  # skipped steps count (one clock for data, schedule and checkpoints)
    assert any(not torch.equal(v, before[k]) for k, v in module.model.state_dict().items())  # the good step applied
    assert _all_finite(module, t.optimizers[0])


def test_nonfinite_gradients_with_a_finite_loss_are_skipped():
    torch.manual_seed(0)
    module = make_module(ema={"decay": 0.5}, nonfinite={"max_consecutive": 0})
    first = next(p for p in module.model.parameters() if p.requires_grad)
    first.register_hook(lambda g: g * float("nan"))
    before, ema = _snapshot(module), {k: v.clone() for k, v in module.ema.shadow.items()}
    t = trainer(max_steps=3)
    t.fit(module, train_dataloaders=loader([collate_examples(EXAMPLES, PAD)], 3))
    assert t.global_step == 3 and module.skipped_nonfinite == 3 and module.nonfinite.last["what"] == "gradient"
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in module.ema.shadow.items():
        assert torch.equal(v, ema[k]), k
    assert not t.optimizers[0].state  # AdamW never stepped: no moments, no weight decay


def test_fp16_amp_scaler_and_ema_never_see_nan():
    """16-mixed on CPU (GradScaler): a NaN loss is skipped by us, the scaler stays finite, weights/EMA unchanged."""
    torch.manual_seed(0)
    module = make_module(ema={"decay": 0.5})
    before, ema = _snapshot(module), {k: v.clone() for k, v in module.ema.shadow.items()}
    t = trainer(max_steps=2, plugins=[_fp16()])
    t.fit(module, train_dataloaders=loader([_bad_batch()], 2))
    scaler = t.precision_plugin.scaler
    assert scaler is not None and module.skipped_nonfinite == 2
    assert torch.isfinite(torch.as_tensor(scaler.get_scale()))
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in module.ema.shadow.items():
        assert torch.equal(v, ema[k]), k
    t2 = trainer(max_steps=2, plugins=[_fp16()])
    t2.fit(module, train_dataloaders=loader([_bad_batch(), collate_examples(EXAMPLES, PAD)], 2))
    assert _all_finite(module, t2.optimizers[0]) and module.nonfinite.consecutive == 0


def test_guard_options_state_and_task_counts():
    guard = NonFiniteGuard.from_any({"max_consecutive": 2, "check_grads": False})
    assert guard.options() == {"max_consecutive": 2, "check_grads": False}
    with pytest.raises(ValueError, match="unknown nonfinite options"):
        NonFiniteGuard.from_any({"max_consecutiv": 2})
    with pytest.raises(ValueError, match=">= 0"):
        NonFiniteGuard.from_any({"max_consecutive": -1})
    grouped = {"groups": {"image-text": {"tasks": ["caption", "vqa", "caption"]}, "other": {"tasks": ["gigaword"]}}}
    assert batch_task_counts(grouped) == {"caption": 2, "vqa": 1, "gigaword": 1}
    guard.skip(7, "loss", grouped)
    state = guard.state_dict()
    restored = NonFiniteGuard()
    restored.load_state_dict(state)
    assert restored.total == 1 and restored.consecutive == 1 and restored.last["step"] == 7
    with pytest.raises(NonFiniteLossError, match=r"step 8, tasks in its batch: caption×2, gigaword×1, vqa×1"):
        guard.skip(8, "loss", grouped)


def test_guard_state_survives_a_checkpoint():
    module = make_module(nonfinite={"max_consecutive": 5})
    module.nonfinite.skip(3, "loss", tasks={"words": 4})
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    other = make_module(nonfinite={"max_consecutive": 5})
    other.on_load_checkpoint(checkpoint)
    assert other.nonfinite.consecutive == 1 and other.nonfinite.last["tasks"] == {"words": 4}
