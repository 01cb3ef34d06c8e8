"""Scale: a 2-process CPU DDP run (gloo) matches a 1-process run with the doubled batch; the DDP / FSDP strategy
configs instantiate; the torchrun / srun launch scripts build the documented commands; (slow) torchrun with
2 CPU processes writes one run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from test_training_module import PAD, WordTask, WordTokenizer, example, tiny_config
from torch.utils.data import DataLoader, Dataset

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.paths import REPO_ROOT
from ofa_lightning.training import OFALitModule
from ofa_lightning.training.run import compose_config

warnings.filterwarnings("ignore", ".*does not have many workers.*")
SCRIPTS = REPO_ROOT / "scripts"

# 8 examples, every target 3 tokens (2 words + EOS): each half of a batch has the same token count, so the
# token-normalised loss of the full batch is the mean of the two halves' losses, as DDP's gradient average assumes
EXAMPLES = [example(i, [10 + i, 11 + i], [20 + (i % 5), 30 + (i % 7)]) for i in range(8)]
STEPS = 4


class Batches(Dataset):
    """Step s: the examples ``rows_for(rank)`` of batch s (rank from torch.distributed when initialised)."""

    def __init__(self, world: int):
        self.world = world

    def __len__(self):
        return STEPS

    def __getitem__(self, step):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        full = [EXAMPLES[(step * 4 + j) % len(EXAMPLES)] for j in range(4)]
        part = full if self.world == 1 else full[rank * 2 : rank * 2 + 2]
        return collate_examples(part, PAD)


class Final(pl.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        pl_module.eval()
        with torch.no_grad():
            loss = pl_module.compute_loss(collate_examples(EXAMPLES, PAD), train=False).loss.item()
        params = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()])
        self.out.write_text(json.dumps({"loss": loss, "params": params.tolist()[:2000], "step": trainer.global_step}))


def _fit(world: int, out: Path):
    torch.manual_seed(0)
    tok = WordTokenizer()
    module = OFALitModule(
        tiny_config(),
        tokenizer=tok,
        tasks={"words": WordTask(tok)},
        optim={"lr": 3e-3, "warmup_steps": 1, "max_steps": STEPS},
        loss={"label_smoothing": 0.1},
    )
    kw = dict(strategy=DDPStrategy(start_method="fork", find_unused_parameters=True)) if world > 1 else {}
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[Final(out)],
        **kw,
    )
    trainer.fit(module, train_dataloaders=DataLoader(Batches(world), batch_size=None))
    return json.loads(out.read_text())


def test_two_process_ddp_matches_one_process_with_the_doubled_batch(tmp_path, one_thread):
    single = _fit(1, tmp_path / "single.json")
    ddp = _fit(2, tmp_path / "ddp.json")
    assert single["step"] == ddp["step"] == STEPS
    assert single["loss"] == pytest.approx(ddp["loss"], rel=1e-4, abs=1e-5)
    diff = max(abs(a - b) for a, b in zip(single["params"], ddp["params"]))
    assert diff < 1e-4, diff


# ------------------------------------------------------------------------------------------------ strategy configs
def test_ddp_and_fsdp_strategy_configs_instantiate(tmp_path):
    from pytorch_lightning.strategies import FSDPStrategy

    from ofa_lightning.model.layers import DecoderLayer, EncoderLayer
    from ofa_lightning.training.run import trainer_arguments

    ddp = trainer_arguments(compose_config(["trainer=ddp"], tmp_path, tmp_path))
    assert isinstance(ddp["strategy"], DDPStrategy) and ddp["num_nodes"] == 1
    fsdp_cfg = compose_config(["trainer=fsdp", "trainer.devices=8"], tmp_path, tmp_path)
    fsdp = trainer_arguments(fsdp_cfg)
    assert isinstance(fsdp["strategy"], FSDPStrategy) and fsdp["devices"] == 8
    policy = fsdp["strategy"].kwargs["auto_wrap_policy"]
    assert set(policy._module_classes) == {EncoderLayer, DecoderLayer}
    assert fsdp_cfg.trainer.strategy.sharding_strategy == "FULL_SHARD"


# ------------------------------------------------------------------------------------------------ launch scripts
def _dry(script: str, env: dict, *args: str) -> str:
    out = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_torchrun_script_builds_a_multinode_command():
    line = _dry(
        "torchrun_train.sh",
        {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node0", "GPUS_PER_NODE": "8", "RUN_NAME": "cap1"},
        "experiment=caption_stage1_large",
    )
    for part in (
        "torchrun",
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=8",
        "--master_addr=node0",
        "-m ofa_lightning.cli.train",
        "trainer=ddp",
        "trainer.devices=8",
        "trainer.num_nodes=2",
        "run_name=cap1",
        "experiment=caption_stage1_large",
    ):
        assert part in line, (part, line)
    refused = subprocess.run(
        ["bash", str(SCRIPTS / "torchrun_train.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", "NNODES": "2", "GPUS_PER_NODE": "1"},
    )
    assert refused.returncode == 2 and "RUN_NAME" in refused.stderr  # nodes must agree on the run dir


def test_srun_script_reads_the_slurm_allocation():
    line = _dry(
        "srun_train.sh",
        {"SLURM_NNODES": "4", "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_ID": "123"},
        "experiment=pretrain_large",
    )
    for part in (
        "srun",
        "--ntasks-per-node=8",
        "trainer.devices=8",
        "trainer.num_nodes=4",
        "run_name=slurm-123",
        "resume=auto",
        "experiment=pretrain_large",
    ):
        assert part in line, (part, line)
    text = (SCRIPTS / "sbatch_train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
    assert "scripts/srun_train.sh" in text


def test_slurm_launcher_configs_compose(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ofa_lightning.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", f"paths.root_dir={tmp_path}"],
            return_hydra_config=True,
        )
        multi = compose(
            "train",
            overrides=["hydra/launcher=slurm_multinode", f"paths.root_dir={tmp_path}"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4  # one task per GPU
    assert multi.hydra.launcher.nodes == 4 and multi.hydra.launcher.tasks_per_node == 8


@pytest.mark.slow
def test_torchrun_two_cpu_processes_one_run_dir(tmp_path):
    from data_recipes.shapes_pipeline import build_shapes_shards

    build_shapes_shards(tmp_path / "data" / "shapes", num_images=24, seed=2, image_size=64)
    env = {
        **os.environ,
        "GPUS_PER_NODE": "2",
        "RUN_NAME": "tr",
        "MASTER_PORT": "29731",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPTS / "torchrun_train.sh"),
            "experiment=demo",
            "debug=fdr",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "trainer.strategy.find_unused_parameters=true",
            "model.encoder_layers=1",
            "model.decoder_layers=1",
            "data.micro_batch_size=4",
            "data.task_options.image_size=64",
            "tokenizer.max_samples=200",
            "test_after_fit=false",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = sorted(p.name for p in (tmp_path / "runs" / "demo").iterdir())
    assert runs == ["tr"]
    run = tmp_path / "runs" / "demo" / "tr"
    assert (run / "checkpoints" / "last.ckpt").is_file() and len(list((run / "wandb").glob("offline-run-*"))) == 1
