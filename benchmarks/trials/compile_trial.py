"""Trial: does ``torch.compile`` (Inductor, CPU) speed up the ResNet trunk of a training step?

Runs one OFA training step in a loop, in this process, and prints the median step time after two warm-up steps and
the peak RSS. Run each mode in a fresh process (and under the same allocator as the other rows, e.g.
``LD_PRELOAD=$(make -s tcmalloc)``) so that peaks compare:

    python benchmarks/trials/compile_trial.py tiny eager 8
    python benchmarks/trials/compile_trial.py tiny segments 8        # each checkpoint segment compiled
    OPTS=default,bf16 python benchmarks/trials/compile_trial.py tiny trunk 7   # whole trunk compiled, no checkpointing

``OPTS`` is a :func:`train_step.options_from_string` spec (default: the lean configuration). ``trunk`` cannot be
combined with ``resnet_stage_checkpoint``: Dynamo does not trace a ``checkpoint`` with a ``context_fn`` (which the
BN-safe recomputation needs). Finding: 7-20 % slower and 150-180 MB more than eager on a
2-core CPU, so training does not compile the trunk.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))

import torch  # noqa: E402
from common import build_ours, current_rss_mb, make_batch, peak_rss_mb, setup_threads
from train_step import TrainStep, options_from_string

MODES = ("eager", "segments", "trunk")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in MODES or not argv[2].isdigit() or int(argv[2]) < 3:
        print(f"usage: compile_trial.py SIZE {{{','.join(MODES)}}} STEPS (STEPS >= 3)", file=sys.stderr)
        return 2
    size, mode, steps = argv[0], argv[1], int(argv[2])
    setup_threads()
    model = build_ours(size, train=True)
    step = TrainStep(
        "ours",
        model,
        make_batch(seed=0),
        options_from_string(os.environ.get("OPTS", "default,bf16,resnet_stage_checkpoint")),
    )
    if mode == "segments":
        import ofa_lightning.speed.resnet as resnet

        resnet._run_modules = torch.compile(resnet._run_modules, dynamic=False)
    elif mode == "trunk":
        trunk = model.encoder.embed_images
        trunk.forward_features = torch.compile(trunk.forward_features, dynamic=False)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
        print(f"step {i}: {times[-1]:.3f} s, loss {loss:.5f}, RSS {current_rss_mb():.0f} MB", flush=True)
    print(
        f"RESULT {size} {mode}: median step {statistics.median(times[2:]):.3f} s (after 2 warm-up steps), "
        f"first step {times[0]:.1f} s, peak RSS {peak_rss_mb():.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
