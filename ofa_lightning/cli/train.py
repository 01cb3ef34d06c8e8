"""``ofa-train``: a Hydra main (``version_base="1.3"``) around :func:`ofa_lightning.training.run.train`.

    ofa-train experiment=demo
    ofa-train model=base mixture=caption_only trainer.max_steps=20000
    ofa-train -m mixture=caption_only,vqa_only,caption_vqa_grounding   # a sweep, one run dir per job
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ofa_lightning.paths import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from ofa_lightning.training import hydra_ddp
    from ofa_lightning.training.run import train

    # Lightning's DDP launcher starts this job's other ranks as plain runs into this job's dir (training/hydra_ddp.py)
    hydra_ddp.install([f"run_name={hydra_ddp.quote_override(cfg.run_name)}"])
    with hydra_ddp.job_scope():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", ""), None)


if __name__ == "__main__":
    main()
