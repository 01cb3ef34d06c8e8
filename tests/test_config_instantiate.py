"""One way to instantiate: a config node that declares ``_target_`` is built by ``hydra.utils.instantiate`` (data,
trainer and its nested strategy); the code never reads a ``_target_`` key itself, and presets inherit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf

from ofa_lightning.data import OFADataModule
from ofa_lightning.paths import CONF_DIR
from ofa_lightning.training.run import build_trainer, compose_config, trainer_arguments

PACKAGE = Path(__file__).resolve().parents[1] / "ofa_lightning"


def test_no_code_reads_or_drops_a_target_key():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "_target_"]
        assert not found, f"{path.relative_to(PACKAGE.parent)}:{found}: build the node with hydra.utils.instantiate"


def test_the_declared_targets_are_what_gets_built(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(["trainer=ddp", "trainer.accelerator=cpu"], tmp_path, tmp_path)
    assert isinstance(instantiate(cfg.data, _convert_="all"), OFADataModule)
    strategy = trainer_arguments(cfg)["strategy"]
    assert isinstance(strategy, pl.strategies.DDPStrategy) and strategy._timeout.total_seconds() == 1800
    cpu = compose_config(["trainer=cpu", "trainer.max_steps=1"], tmp_path, tmp_path)
    trainer = build_trainer(cpu, logger=False, default_root_dir=str(tmp_path), enable_checkpointing=False)
    assert isinstance(trainer, pl.Trainer) and trainer.max_steps == 1


def test_sibling_presets_inherit_instead_of_copying():
    """A preset of a family (same task, another data set or size) names its parent in its defaults list."""
    for name in ("refcocog_large", "refcocoplus_large"):
        defaults = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml").defaults
        assert "refcoco_large" in list(defaults), name
    roots = []
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        parents = [d for d in OmegaConf.load(path).get("defaults", []) if isinstance(d, str) and d != "_self_"]
        if not parents:
            roots.append(path.stem)
    assert "refcocog_large" not in roots and "refcocoplus_large" not in roots
