"""``ofa-eval``: a checkpoint → metrics JSON + predictions, with the training run's data and task settings."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ofa_lightning.cli._hydra import hydra_command


def run(cfg: DictConfig) -> dict:
    """Evaluate ``ckpt_path`` with its run's config, tokenizer and tasks: the checkpoint's model card
    (``training/model_card.py``), else the run dir beside it (``config_resolved.yaml``, ``tokenizer/``)."""
    from ofa_lightning.training.model_card import read_model_card
    from ofa_lightning.training.run import evaluate

    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"ckpt_path={cfg.ckpt_path!r} is not a file (e.g. runs/<task>/<run>/checkpoints/last.ckpt)"
        )
    card = read_model_card(ckpt)
    if card.config is None:
        raise FileNotFoundError(
            f"{ckpt} carries no run config and no folder above it holds config_resolved.yaml: "
            "not a checkpoint written by ofa-train"
        )
    train_cfg = OmegaConf.create(card.config)
    for key, value in (cfg.overrides or {}).items():
        OmegaConf.update(train_cfg, key, value, force_add=True)
    out_dir = Path(cfg.paths.output_dir)
    metrics = evaluate(train_cfg, ckpt, out_dir, split=cfg.split, tokenizer=card.tokenizer())
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
