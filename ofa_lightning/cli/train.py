"""``ofa-train``: train (and test) one run, or a Hydra multirun sweep of runs, from the kit's configs.

    ofa-train experiment=demo
    ofa-train model=base mixture=caption_only trainer.max_steps=20000
    ofa-train -m mixture=caption_only,vqa_only,caption_vqa_grounding   # a sweep, one run dir per job

Runs go to ``./runs/<task_name>/<run_name>/`` under the directory it is started in (``paths.root_dir``).
"""

from __future__ import annotations

from ofa_lightning.cli._hydra import apply_smoke, hydra_command, smoke_enabled


def run(cfg) -> float | None:
    """One job: fit + test with :func:`ofa_lightning.training.run.train`; returns ``optimized_metric`` for sweepers."""
    from ofa_lightning.training import hydra_ddp
    from ofa_lightning.training.run import train

    # Lightning's DDP launcher starts this job's other ranks as plain runs into this job's dir (hydra_ddp.py)
    hydra_ddp.install([f"run_name={hydra_ddp.quote_override(cfg.run_name)}"])
    with hydra_ddp.job_scope():
        # a resumed run rebuilds its config from its checkpoint: OFA_SMOKE applies to that config too (2 more steps)
        smoke = (lambda c, step: apply_smoke(c, "train", resumed_step=step)) if smoke_enabled() else None
        metrics = train(cfg, smoke)
    return metrics.get(cfg.get("optimized_metric", ""), None)


main = hydra_command("train", run, prog="ofa-train")


if __name__ == "__main__":
    main()
