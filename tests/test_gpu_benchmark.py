"""``benchmarks/suites/gpu.py`` without a GPU: its dry run exercises every part on the CPU (ours and the port, training and
generation, profiles, targets with their bound lines, variants, the largest-batch searches), the fused-LayerNorm
variant's maths, the bound lines on the H100 figures kept in ``tests/data/benchmarks/``, and (slow) the compiled layers
and trunk against eager."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "suites"
FIGURES = REPO / "tests" / "data" / "benchmarks"  # an H100 run's figures (gpu.py, gpu_profile.py, gpu_ceiling.py)


@pytest.fixture(scope="module")
def gpu():
    """``benchmarks/suites/gpu.py`` as a module (it puts the harness and its suite on ``sys.path`` for its parts)."""
    spec = importlib.util.spec_from_file_location("ofa_gpu_bench", BENCH / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ofa_gpu_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry(gpu, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_dry")
    threads = torch.get_num_threads()
    try:
        rc = gpu.main(["--dry-run", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return rc, json.loads((out / "gpu_results.json").read_text()), (out / "gpu_results.md").read_text()


def test_dry_run_has_every_part_and_ratio(dry, gpu):
    rc, res, md = dry
    assert rc == 0 and res["errors"] == {} and res["dry_run"] is True
    for part in (
        "train",
        "profile",
        "port_train",
        "port_profile",
        "generate",
        "generate_profile",
        "ceiling",
        "targets",
        "flex_parity",
        "variants",
        "max_batch",
    ):
        assert part in res, part
    assert {"torch", "cuda", "modelscope", "transformers"} <= set(res["versions"])
    t = res["train"]
    assert t["flops_per_step"] > 0 and t["samples_per_s"] > 0 and t["mfu"] > 0
    assert {"mem_per_sample_gb", "peak_mem_per_sample_gb", "fixed_mem_gb"} <= set(t)
    port = res["port_train"]
    assert port["batch"] == t["batch"] and port["samples_per_s"] > 0 and "peak_mem_per_sample_gb" in port
    assert port["speedup"] == pytest.approx(port["step_s"] / t["step_s_at"][str(port["batch"])])
    gen = res["generate"]
    assert gen["ours"]["images_per_s"] > 0 and gen["port"]["images_per_s"] > 0
    assert gen["speedup"] == pytest.approx(gen["port"]["s_per_batch"] / gen["ours"]["s_per_batch"])
    assert gen["same_best_tokens"].endswith(f"of {gen['batch']}")
    for prof in (res["profile"], res["port_profile"], res["generate_profile"]):
        assert prof["kernel_ms_per_step"] > 0 and sum(prof["kernel_share"].values()) == pytest.approx(1.0)
    assert set(res["ceiling"]["rows"]) >= {"at 70 % of peak"}
    # every target has its value, and a target that is missed says what bounds it
    targets = res["targets"]
    assert set(targets) == {"mfu", "train_speedup_vs_port", "generate_speedup_vs_port"}
    assert targets["train_speedup_vs_port"]["value"] == port["speedup"]
    assert targets["generate_speedup_vs_port"]["value"] == gen["speedup"]
    for name, tg in targets.items():
        assert tg["met"] == (tg["value"] >= tg["target"])
        assert (tg["bound"] is None) == tg["met"], name
    assert targets["mfu"]["target"] == 0.35 and not targets["mfu"]["met"]  # a CPU is far from it
    assert md.count("What bounds it") == sum(not tg["met"] for tg in targets.values())
    assert "dry run" in md and "ModelScope port" in md


def test_dry_run_variants_parity_and_capacity(dry, gpu):
    _, res, md = dry
    par = res["flex_parity"]
    assert par["ok"] and abs(par["loss_flex"] - par["loss_default"]) < 1e-4 and par["max_rel_grad_diff"] < 1e-4
    rows = {r["variant"]: r for r in res["variants"]}
    assert set(rows) == set(gpu.VARIANTS)
    assert not [r for r in rows.values() if "error" in r]
    timed = {label for label, r in rows.items() if "skipped" not in r}
    assert timed == {label for label, v in gpu.VARIANTS.items() if not v[1]}  # all but the compiled ones
    assert all(rows[label]["samples_per_s"] > 0 and rows[label]["mfu"] > 0 for label in timed)
    assert rows["ResNet in NCHW (channels-last off)"]["channels_last"] is False
    assert rows["fused LayerNorms (bf16 in and out)"]["layernorms_fused"] > 0
    assert all("no torch.compile in the dry run" in rows[label]["skipped"] for label in set(rows) - timed)
    modes = {(m["size"], m["mode"]): m for m in res["max_batch"]}
    assert set(modes) == {
        ("tiny", mode) for mode in ("activation checkpointing", "activation checkpointing + FSDP (trainer=fsdp)")
    }
    assert modes[("tiny", "activation checkpointing")]["largest_batch_found"] >= 1
    assert "accelerator" in modes[("tiny", "activation checkpointing + FSDP (trainer=fsdp)")]["skipped"]
    # what the dry run changes in this process is restored: the CPU flex guards, the model overrides, no group
    import torch.distributed as dist
    import torch.nn.attention.flex_attention as fa

    from ofa_lightning.speed import flex

    assert gpu.OVERRIDES == {} and not dist.is_initialized()
    q = torch.zeros(1, 1, 1, 1, requires_grad=True)
    with pytest.raises(NotImplementedError, match="attention_kernel=sdpa"):
        flex.refuse_cpu_backward(q)
    with pytest.raises(NotImplementedError):
        fa._validate_device(q, q, q)


def test_largest_batch_search_doubles_then_bisects_and_says_why_it_stopped(gpu):
    import time
    from types import SimpleNamespace

    from gpu_capacity import search

    tried = []

    class FakeStep:  # out of memory above 37 samples
        def __init__(self, bs):
            tried.append(bs)
            self.bs, self.model = bs, torch.nn.Linear(1, 1)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

        def __call__(self):
            if self.bs > 37:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    cfg = SimpleNamespace(max_batch_start=4, max_batch_cap=4096, px=480)
    cpu = torch.device("cpu")
    row = search(FakeStep, "mode", "large", cfg, cpu, lambda m: None, time.perf_counter() + 60)
    assert tried[:5] == [4, 8, 16, 32, 64] and row["first_oom_batch"] - row["largest_batch_found"] <= 4
    assert 33 <= row["largest_batch_found"] <= 37 and row["complete"] and not row["capped"]
    capped = search(
        FakeStep,
        "mode",
        "large",
        SimpleNamespace(**{**vars(cfg), "max_batch_cap": 16}),
        cpu,
        lambda m: None,
        time.perf_counter() + 60,
    )
    assert capped["largest_batch_found"] == 16 and capped["capped"] and not capped["complete"]
    late = search(FakeStep, "mode", "large", cfg, cpu, lambda m: None, time.perf_counter() - 1)
    assert late["largest_batch_found"] == 0 and not late["capped"] and not late["complete"]


def test_unknown_part_is_refused_by_name(gpu, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--dry-run", "--parts", "train,trian"])
    assert exit_.value.code == 2 and "unknown part(s) trian; known: train," in capsys.readouterr().err


def test_fused_layer_norm_falls_back_to_eager_and_matches_it_in_bf16(gpu):
    from gpu_parts import fuse_norms, layer_norm_in

    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(64)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 5, 64) * 3 + 1
    eager = ln(x)
    fused = torch.nn.LayerNorm(64)
    fused.load_state_dict(ln.state_dict())
    assert fuse_norms(torch.nn.Sequential(fused)) == 1
    assert torch.equal(fused(x), eager)  # off the GPU: the eager LayerNorm itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fused(x.bfloat16()), ln(x.bfloat16()))
    # the GPU path's maths: bf16 in and out, within bf16 rounding of the fp32 LayerNorm, gradients too
    xr = x.clone().requires_grad_(True)
    out = layer_norm_in(fused, xr, torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), eager, atol=0.05, rtol=0.02)
    g = torch.randn_like(eager)
    out.float().backward(g)
    xe = x.clone().requires_grad_(True)
    ln.zero_grad()
    ln(xe).backward(g)
    torch.testing.assert_close(xr.grad, xe.grad, atol=0.05, rtol=0.05)
    torch.testing.assert_close(fused.weight.grad, ln.weight.grad, atol=0.5, rtol=0.02)


def test_bound_lines_on_the_committed_h100_figures(gpu):
    """The bound lines computed from the H100 run, profile and counts kept in ``tests/data/benchmarks/``: the line names
    the ceiling that the step time 35 % needs falls under (at the profiled rate of the convolutions and linears,
    or even at 70 % of peak), or says the target is within it and names the kernel shares in the way."""
    import gpu_bounds
    import gpu_ceiling

    ceiling = json.loads((FIGURES / "gpu_ceiling.json").read_text())
    profile = json.loads((FIGURES / "gpu_profile.json").read_text())
    run = json.loads((FIGURES / "gpu_results.json").read_text())["train"]
    b = gpu_ceiling.bound(ceiling["counts"], profile, 32)
    line = gpu_bounds.mfu_bound(run, b, profile, gpu_ceiling.H100_PEAK_BF16)
    assert line.startswith(f"MFU {100 * run['mfu']:.1f} % < 35 %")
    need = run["flops_per_step"] / (0.35 * gpu_ceiling.H100_PEAK_BF16)
    rows = b["rows"]
    if need < rows["at 70 % of peak"]["step_s"]:
        assert "Out of reach with OFA's training-mode BatchNorm" in line
    elif need < rows["at the profiled rate"]["step_s"]:
        assert "Out of reach at the rate this run's convolutions and linears reached" in line
        assert f"{100 * rows['at the profiled rate']['mfu']:.1f} %" in line
    else:
        assert "Within the ceiling" in line
    assert f"{1e3 * need:.0f} ms" in line and f"{1e3 * run['step_s']:.0f} ms" in line
    # a port 2x slower than our step: 3x needs ours below the floor -> out of reach, the floor is named
    port = {"batch": 32, "step_s": 2 * run["step_s"], "speedup": 2.0}
    slow = gpu_bounds.train_ratio_bound(run, port, b, profile, profile)
    floor = b["rows"]["at 70 % of peak"]["step_s"]
    assert (2 * run["step_s"] / 3 < floor) == ("Out of reach" in slow)
    far = gpu_bounds.train_ratio_bound(run, {**port, "step_s": 10 * run["step_s"], "speedup": 10.0}, b, profile, None)
    assert "Reachable in principle" in far
    gen = {"batch": 32, "speedup": 2.0, "ours": {"s_per_batch": 0.2}, "port": {"s_per_batch": 0.4}}
    host = gpu_bounds.generate_ratio_bound(gen, {**profile, "busy": 0.3, "wall_ms_per_call": 200.0})
    assert "Host-bound" in host and "30 %" in host and "needs ours in 80 ms" in host
    assert "Kernel-bound" in gpu_bounds.generate_ratio_bound(gen, {**profile, "busy": 0.9, "wall_ms_per_call": 200.0})


@pytest.mark.slow
def test_compiled_layers_and_trunk_equal_eager(gpu, one_thread):
    """What the compiled variants compile (each encoder/decoder layer, the ResNet trunk) gives eager's loss and
    gradients on the CPU (Inductor's C++ backend; minutes of compiling on 2 cores, hence slow)."""
    from gpu_parts import OVERRIDES, build, compile_parts, loss_fn, make_batch

    saved = dict(OVERRIDES)
    OVERRIDES.update(gpu.config(True).overrides)
    try:
        cpu = torch.device("cpu")
        eager = build("tiny", cpu, dropout=0.0).train()
        compiled = build("tiny", cpu, dropout=0.0).train()
        compiled.load_state_dict(eager.state_dict())
        compile_parts(compiled, "layers+trunk")
        batch = make_batch(2, 32, 6, 6, cpu, vocab=300)
        results = []
        for model in (eager, compiled):
            loss = loss_fn(model, batch, cpu, bf16=False)
            loss.backward()
            results.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    finally:
        OVERRIDES.clear()
        OVERRIDES.update(saved)
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert loss_c == pytest.approx(loss_e, rel=1e-5)
    assert set(grads_c) == set(grads_e)
    scale = max(float(g.abs().max()) for g in grads_e.values())
    worst = max(float((grads_c[n] - g).abs().max()) for n, g in grads_e.items()) / scale
    assert worst < 1e-4
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # something was compiled
