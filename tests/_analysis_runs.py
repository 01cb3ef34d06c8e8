"""A tiny Hydra-like sweep (2 runs, 3 steps each) on the embedded shapes data, for the analysis and notebook tests.

``<root>/runs/train/multirun-20260101-000000/{0,1}/`` each with ``.hydra/overrides.yaml`` as ``ofa-train -m``
writes it: job 0 trains the demo mixture (caption + VQA + grounding) with offline W&B, job 1 drops grounding
(``mixture.grounding=null``) without W&B. Built once per test process and shared by the modules that ask for it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = [
    "experiment=demo",
    "debug=fdr",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "tokenizer.max_samples=50",
    "mixture.detection=null",
]  # the demo's unevaluated auxiliary: these runs compare the three evaluated tasks
JOBS = [["mixture=caption_vqa_grounding"], ["mixture.grounding=null", "logger=none"]]
SWEEP = Path("runs") / "train" / "multirun-20260101-000000"

_built: dict[str, Path] = {}


def tiny_sweep(tmp_path_factory) -> tuple[Path, Path]:
    """(project root, sweep dir); the runs are ``sweep/0`` and ``sweep/1``."""
    if "root" not in _built:
        import torch

        from data_recipes.shapes_pipeline import build_shapes_shards
        from ofa_lightning.training.run import compose_config, train

        root = tmp_path_factory.mktemp("analysis_project")
        build_shapes_shards(root / "data" / "shapes", num_images=24, seed=1, image_size=64)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for num, extra in enumerate(JOBS):
                run_dir = root / SWEEP / str(num)
                overrides = [*TINY, *extra]
                train(compose_config(overrides, run_dir, root))
                (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
                (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        finally:
            torch.set_num_threads(threads)
        _built["root"] = root
    root = _built["root"]
    return root, root / SWEEP
