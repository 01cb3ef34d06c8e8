"""Where the time of one training step goes (our model, timers inside a real step).

Timestamps are taken *during* ordinary training steps, so the parts add up to
the step:

* forward: module pre-/post-hooks around the ResNet trunk (``conv1`` …
  ``layer3``), the encoder layers, the decoder layers, and a wrapper around
  ``model.project`` (projection + loss up to the loss value);
* backward: tensor hooks that fire when the gradient reaches a block's output
  (the block's backward starts) and its input (it ends); the ResNet's backward
  runs last, up to the end of ``loss.backward()``;
* the optimiser step is timed directly; "rest" is whatever is left (embeddings,
  position biases, layer norms between blocks, image projection, autograd glue).

FLOPs per component (forward + backward) come from
``torch.utils.flop_counter.FlopCounterMode`` on a replay of that component with
the inputs it saw in the step (FLOP counts do not depend on timing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import PAD, Batch
from contention import CLEAN_OTHER_FRAC, Probe, wait_for_quiet
from torch.utils.flop_counter import FlopCounterMode
from train_step import TrainOptions, TrainStep

COMPONENTS = ("resnet", "encoder", "decoder", "projection", "optimizer")
LABELS = {
    "resnet": "ResNet trunk (stages 1-3)",
    "encoder": "encoder layers",
    "decoder": "decoder layers",
    "projection": "vocabulary projection + loss",
    "optimizer": "AdamW step",
    "rest": "rest (embeddings, position biases, image proj, LNs, autograd glue)",
}


def _first_tensor(x):
    return x[0] if isinstance(x, (tuple, list)) else x


class _StepTimer:
    """Installs the hooks; ``marks`` is refilled on every step."""

    def __init__(self, model):
        self.model = model
        self.marks: dict[str, float] = {}
        self.handles = []
        self.captured: dict[str, object] = {}
        trunk = model.encoder.embed_images
        enc, dec = model.encoder.layers, model.decoder.layers
        # forward_features runs the blocks one by one (checkpointing, BN folding), so the stage modules'
        # own hooks never fire: the span ends at the last bottleneck of stage 3
        self._span(trunk.conv1, trunk.layer3[-1], "resnet", input_grad=False)
        self.ffn_marks: list[dict[str, float]] = []
        self.ffn_inputs: list[torch.Tensor] = []
        for layer in (*enc, *dec):
            self._wrap_ffn(layer)
        self._span(enc[0], enc[-1], "encoder")
        self._span(dec[0], dec[-1], "decoder")
        self._orig_project = model.project

        def project(hidden):
            self._mark("f_projection_0")
            if hidden.requires_grad:
                hidden.register_hook(self._grad_mark("b_projection_1"))
            self.captured.setdefault("projection_input", hidden.detach())
            return self._orig_project(hidden)

        model.project = project  # instance attribute shadows the method while profiling

    def remove(self):
        for h in self.handles:
            h.remove()
        del self.model.project
        for layer in (*self.model.encoder.layers, *self.model.decoder.layers):
            del layer.feed_forward

    def _wrap_ffn(self, layer):
        """Times one layer's FFN sub-block (LN → fc1 → GELU → LN → fc2 → residual): forward between entry and
        exit, backward from the gradient reaching its output to the gradient of its input (which also carries
        the residual branch: an upper bound of a few element-wise adds)."""
        orig = layer.feed_forward

        def feed_forward(x):
            marks = {"f0": time.perf_counter()}
            self.ffn_marks.append(marks)
            if len(self.ffn_inputs) < len(self.ffn_marks):
                self.ffn_inputs.append(x.detach())
            if x.requires_grad:
                x.register_hook(self._store(marks, "b1"))
            y = orig(x)
            marks["f1"] = time.perf_counter()
            if y.requires_grad:
                y.register_hook(self._store(marks, "b0"))
            return y

        layer.feed_forward = feed_forward  # instance attribute shadows the method while profiling

    @staticmethod
    def _store(marks, key):
        def hook(grad):
            marks.setdefault(key, time.perf_counter())

        return hook

    def _mark(self, name):
        self.marks[name] = time.perf_counter()

    def _grad_mark(self, name):
        def hook(grad):
            self.marks.setdefault(name, time.perf_counter())

        return hook

    def _span(self, first, last, name, input_grad=True):
        def pre(module, args):
            self._mark(f"f_{name}_0")
            x = args[0] if args else None
            if input_grad and isinstance(x, torch.Tensor) and x.requires_grad:
                x.register_hook(self._grad_mark(f"b_{name}_1"))

        def post(module, args, out):
            self._mark(f"f_{name}_1")
            y = _first_tensor(out)
            if isinstance(y, torch.Tensor) and y.requires_grad:
                y.register_hook(self._grad_mark(f"b_{name}_0"))

        self.handles.append(first.register_forward_pre_hook(pre))
        self.handles.append(last.register_forward_hook(post))

    def step(self, step: TrainStep) -> dict[str, float]:
        self.marks = {}
        self.ffn_marks = []
        t0 = time.perf_counter()
        step.optimizer.zero_grad(set_to_none=True)
        loss = step.loss()
        t_loss = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter()
        step.optimizer.step()
        t_end = time.perf_counter()
        m = self.marks
        parts = {
            "resnet": (m["f_resnet_1"] - m["f_resnet_0"]) + (t_bwd - m["b_resnet_0"]),
            "encoder": (m["f_encoder_1"] - m["f_encoder_0"]) + (m["b_encoder_1"] - m["b_encoder_0"]),
            "decoder": (m["f_decoder_1"] - m["f_decoder_0"]) + (m["b_decoder_1"] - m["b_decoder_0"]),
            "projection": (t_loss - m["f_projection_0"]) + (m["b_projection_1"] - t_loss),
            "optimizer": t_end - t_bwd,
        }
        parts["ffn"] = sum((f["f1"] - f["f0"]) + (f["b1"] - f["b0"]) for f in self.ffn_marks)
        parts["attention"] = parts["encoder"] + parts["decoder"] - parts["ffn"]
        parts["total"] = t_end - t0
        parts["rest"] = parts["total"] - sum(parts[c] for c in COMPONENTS)
        parts["forward"], parts["backward"] = t_loss - t0, t_bwd - t_loss
        return parts


def _count_flops(fn: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _component_flops(
    model, batch: Batch, step: TrainStep, opts: TrainOptions, captured_project, ffn_inputs: list | None = None
) -> dict:
    """FLOPs (forward + backward) of each component, replayed on inputs captured from a step."""
    caps = {}

    def capture(name):
        def hook(module, args):
            caps.setdefault(
                name,
                tuple(
                    a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args
                ),
            )

        return hook

    handles = [layer.register_forward_pre_hook(capture(f"enc{i}")) for i, layer in enumerate(model.encoder.layers)]
    handles += [layer.register_forward_pre_hook(capture(f"dec{i}")) for i, layer in enumerate(model.decoder.layers)]
    with torch.no_grad():
        step.loss()
    for h in handles:
        h.remove()
    images = batch.patch_images
    if opts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    trunk = model.encoder.embed_images

    def resnet():
        out = trunk.forward_features(images)
        out.backward(torch.ones_like(out))

    def layers(prefix, mods):
        outs = [_first_tensor(m(*caps[f"{prefix}{i}"])) for i, m in enumerate(mods)]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    hidden = captured_project.clone().requires_grad_(True)
    target = batch.target[batch.target.ne(PAD)] if opts.select_targets else batch.target.reshape(-1)

    def projection():
        F.cross_entropy(model.project(hidden), target, ignore_index=PAD).backward()

    out = dict(
        resnet=_count_flops(resnet),
        encoder=_count_flops(lambda: layers("enc", model.encoder.layers)),
        decoder=_count_flops(lambda: layers("dec", model.decoder.layers)),
        projection=_count_flops(projection),
        optimizer=0.0,
    )

    def ffn():
        mods = [*model.encoder.layers, *model.decoder.layers]
        outs = [layer.feed_forward(x.clone().requires_grad_(True)) for layer, x in zip(mods, ffn_inputs or [])]
        if outs:
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    out["ffn"] = _count_flops(ffn)
    out["attention"] = out["encoder"] + out["decoder"] - out["ffn"]
    out["total"] = _count_flops(lambda: step.loss().backward())
    out["rest"] = out["total"] - sum(out[c] for c in COMPONENTS)
    model.zero_grad(set_to_none=True)
    return out


def profile_training_step(
    model,
    batch: Batch,
    opts: TrainOptions,
    repeats: int = 3,
    max_attempts: int | None = None,
    quiet_wait_s: float = 20.0,
    log: Callable[[str], None] | None = None,
) -> dict:
    step = TrainStep("ours", model, batch, opts)
    for _ in range(2):  # warm-up: oneDNN primitives, optimiser state
        step()
    timer = _StepTimer(model)
    samples, attempts = [], 0
    max_attempts = max_attempts or 3 * repeats
    try:
        waited, wait_budget, disturbed = 0.0, 2 * quiet_wait_s, []
        while len(samples) < repeats and attempts < max_attempts:
            if waited >= wait_budget and attempts >= repeats:
                break  # the machine is busy for good
            attempts += 1
            if waited < wait_budget:
                waited += wait_for_quiet(min(quiet_wait_s, wait_budget - waited))
            with Probe() as probe:
                parts = timer.step(step)
            clean = probe.other_frac < CLEAN_OTHER_FRAC
            if log:
                log(
                    f"  profiled step {attempts}: {parts['total']:.3f} s"
                    + ("" if clean else f"  (disturbed: others used {probe.other_frac:.0%} of the CPUs)")
                )
            (samples if clean else disturbed).append(parts)
        contended = len(samples) == 0
        if contended:
            samples = disturbed
        captured = timer.captured["projection_input"]
        ffn_inputs = list(timer.ffn_inputs)
    finally:
        timer.remove()
    flops = _component_flops(model, batch, step, opts, captured, ffn_inputs)
    med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}

    def row(key: str, label: str) -> dict:
        gflop = flops[key] / 1e9
        rate = gflop / med[key] if med[key] > 0 and gflop > 0.05 else None
        return dict(component=label, key=key, seconds=med[key], gflop=gflop, gflop_per_s=rate)

    rows = [row(key, LABELS[key]) for key in COMPONENTS + ("rest",)]
    split = [
        row("attention", "of which attention sub-blocks (LN, Q/K/V/out projections, biases, softmax)"),
        row("ffn", "of which FFN sub-blocks (LN, fc1, GELU, LN, fc2)"),
    ]
    return dict(
        total_s=med["total"],
        forward_s=med["forward"],
        backward_s=med["backward"],
        layer_split=split,
        total_gflop=flops["total"] / 1e9,
        total_gflop_per_s=flops["total"] / 1e9 / med["total"],
        steps_used=len(samples),
        contended=contended,
        options=opts.describe(),
        rows_projected=int(captured.shape[0]),
        components=rows,
    )


def format_profile(prof: dict, peak_gflops: float = 300.0) -> str:
    lines = [
        f"| component | time (s) | share | GFLOP (fwd+bwd) | GFLOP/s | % of ~{peak_gflops:.0f} GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = list(prof["components"])
    split = prof.get("layer_split") or []
    if split:  # the attention / FFN split of the encoder + decoder layers, right after the decoder row
        at = next(i for i, r in enumerate(rows) if r["key"] == "decoder") + 1
        rows[at:at] = [dict(r, component="↳ " + r["component"]) for r in split]
    for r in rows:
        rate = r["gflop_per_s"]
        lines.append(
            "| {} | {:.3f} | {:.0%} | {:.1f} | {} | {} |".format(
                r["component"],
                r["seconds"],
                r["seconds"] / prof["total_s"],
                r["gflop"],
                f"{rate:.0f}" if rate else "–",
                f"{rate / peak_gflops:.0%}" if rate else "–",
            )
        )
    lines.append(
        "| **whole step** | **{:.3f}** | 100% | {:.1f} | {:.0f} | {:.0%} |".format(
            prof["total_s"], prof["total_gflop"], prof["total_gflop_per_s"], prof["total_gflop_per_s"] / peak_gflops
        )
    )
    return "\n".join(lines)
