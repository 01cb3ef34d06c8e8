"""OFALitModule under Lightning DDP (2 CPU processes, gloo): a non-finite loss on ONE rank skips the step on every
rank (no hang, weights stay equal), and evaluation metrics / predictions cover both ranks' samples."""

from __future__ import annotations

import json
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from test_training_module import EXAMPLES, PAD, WordTask, WordTokenizer, tiny_config
from torch.utils.data import DataLoader, Dataset

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.training import OFALitModule

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class PerRank(Dataset):
    """Item i on rank r: ``batches[r][i]`` (ranks see different data; no sampler involved)."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches[0])

    def __getitem__(self, i):
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return self.batches[rank][i]


class Recorder(pl.Callback):
    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        digest = float(sum(p.detach().double().sum() for p in pl_module.model.parameters()))
        with open(f"{self.out}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"skipped": pl_module.skipped_nonfinite, "digest": digest, "step": trainer.global_step}, f)


def ddp_trainer(callbacks: list, find_unused_parameters: bool = False) -> pl.Trainer:
    """Two forked CPU ranks (gloo), one epoch of the given loaders, nothing written but what the callbacks write."""
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="fork", find_unused_parameters=find_unused_parameters),
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (inherited by the forked ranks): fast on tiny tensors and no OpenMP pool across fork."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ddp_nonfinite_skip_is_collective_and_metrics_cover_all_ranks(tmp_path):
    good = collate_examples(EXAMPLES, PAD)
    bad = collate_examples(EXAMPLES, PAD)
    bad["weights"] = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    train = PerRank([[good, good, good], [good, bad, good]])  # rank 1's second batch is non-finite
    val_rank = [collate_examples(EXAMPLES[:2], PAD), collate_examples(EXAMPLES[2:], PAD)]
    for b in val_rank:
        b["source"] = "words"
    val = PerRank([[val_rank[0]], [val_rank[1]]])
    tok = WordTokenizer()
    module = OFALitModule(
        tiny_config(),
        tokenizer=tok,
        tasks={"words": WordTask(tok)},
        optim={"lr": 3e-3, "warmup_steps": 1, "max_steps": 10},
        predictions_dir=str(tmp_path),
    )
    trainer = ddp_trainer([Recorder(str(tmp_path))], find_unused_parameters=True)
    trainer.fit(
        module, train_dataloaders=DataLoader(train, batch_size=None), val_dataloaders=DataLoader(val, batch_size=None)
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == 1  # rank 0's loss was finite, it skipped too
    assert ranks[0]["digest"] == ranks[1]["digest"]  # replicas still identical
    written = list(tmp_path.glob("val_words_step*.jsonl"))
    assert len(written) == 1
    records = [json.loads(line) for line in written[0].read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(e.id for e in EXAMPLES)  # gathered from both ranks
    acc = sum(r["prediction"] == r["reference"] for r in records) / len(records)
    assert float(trainer.callback_metrics["val/words/accuracy"]) == acc
    assert "val/words/loss" in trainer.callback_metrics
