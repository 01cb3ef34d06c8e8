"""``ofa-eval``: a checkpoint → metrics JSON + predictions, with the training run's data and task settings."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ofa_lightning.cli._hydra import hydra_command


def run(cfg: DictConfig) -> dict:
    from ofa_lightning.training.run import evaluate

    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} is not a file (e.g. runs/<task>/<run>/checkpoints/last.ckpt)")
    run_dir = next((p for p in ckpt.parents if (p / "config_resolved.yaml").exists()), None)
    if run_dir is None:
        raise FileNotFoundError(f"no config_resolved.yaml in any folder above {ckpt}: not a run written by ofa-train")
    train_cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    for key, value in (cfg.overrides or {}).items():
        OmegaConf.update(train_cfg, key, value, force_add=True)
    out_dir = Path(cfg.paths.output_dir)
    metrics = evaluate(train_cfg, ckpt, out_dir, split=cfg.split, tokenizer_dir=run_dir / "tokenizer")
    if cfg.official:
        from ofa_lightning.metrics import official_caption_scores

        for path in sorted((out_dir / "predictions").glob("*caption*.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            rows = [r for r in rows if r.get("reference")]
            scores = official_caption_scores([r["prediction"] for r in rows], [r["reference"] for r in rows])
            metrics.update({f"official/{path.stem}/{k}": v for k, v in scores.items()})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    return metrics


def report(cfg: DictConfig) -> None:
    metrics = run(cfg)
    for key, value in sorted(metrics.items()):
        print(f"{key:<40} {value:.4f}")
    print(Path(cfg.paths.output_dir) / "metrics.json")


main = hydra_command("eval", report, prog="ofa-eval")


if __name__ == "__main__":
    main()
