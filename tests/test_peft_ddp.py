"""LoRA under Lightning DDP (2 CPU processes, gloo): ranks see different data, the adapter's gradients are averaged
across them (the replicas stay equal), the base stays frozen on both, and rank 0's adapter-only checkpoint loads
onto the base as the trained model."""

from __future__ import annotations

import json

import pytorch_lightning as pl
import torch
from test_peft import write_base
from test_training_ddp import PerRank, ddp_trainer
from test_training_module import EXAMPLES, PAD, WordTask, WordTokenizer, tiny_config
from torch.utils.data import DataLoader

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.training import OFALitModule
from ofa_lightning.training.peft import ADAPTER_KEY, load_adapted_model


class AdapterRecorder(pl.Callback):
    """Each rank writes a digest of its adapter and base weights and the names of the parameters it trained."""

    def __init__(self, out: str):
        self.out = out

    @staticmethod
    def base_digest(pl_module) -> float:
        return float(sum(p.detach().double().sum() for n, p in pl_module.model.named_parameters() if "lora_" not in n))

    def on_train_start(self, trainer, pl_module):
        self.base_at_start = self.base_digest(pl_module)

    def on_train_end(self, trainer, pl_module):
        params = dict(pl_module.model.named_parameters())
        lora = sorted(n for n in params if "lora_" in n)
        record = {
            "step": trainer.global_step,
            "trainable": sorted(n for n, p in params.items() if p.requires_grad),
            "adapter_digest": float(sum(params[n].detach().double().abs().sum() for n in lora)),
            "base_at_start": self.base_at_start,
            "base_digest": self.base_digest(pl_module),
            "lora_b_norm": float(sum(params[n].detach().double().norm() for n in lora if "lora_B" in n)),
        }
        with open(f"{self.out}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(record, f)


def test_lora_ddp_two_ranks_average_the_adapter_and_keep_the_base_frozen(tmp_path, one_thread):
    base_path = tmp_path / "base.pt"
    base = write_base(base_path)
    first, second = collate_examples(EXAMPLES[:2], PAD), collate_examples(EXAMPLES[2:], PAD)
    train = PerRank([[first, first, first, first], [second, second, second, second]])  # different data per rank
    tok = WordTokenizer()
    module = OFALitModule(
        tiny_config(),
        tokenizer=tok,
        tasks={"words": WordTask(tok)},
        init_from=str(base_path),
        peft={"r": 4, "alpha": 8, "dropout": 0.0},
        optim={"lr": 1e-2, "warmup_steps": 0, "max_steps": 4},
    )
    trainer = ddp_trainer([AdapterRecorder(str(tmp_path))])
    trainer.fit(module, train_dataloaders=DataLoader(train, batch_size=None))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    assert ranks[0]["trainable"] == ranks[1]["trainable"] and all("lora_" in n for n in ranks[0]["trainable"])
    assert ranks[0]["lora_b_norm"] > 0  # B starts at zero: the adapter trained
    assert ranks[0]["adapter_digest"] == ranks[1]["adapter_digest"]  # gradients averaged: replicas equal
    assert ranks[0]["base_at_start"] == ranks[1]["base_at_start"]
    for r in ranks:  # the base did not move on either rank
        assert r["base_digest"] == r["base_at_start"]

    # rank 0's adapter-only checkpoint (written by the parent after fit, as Lightning saves on rank 0)
    path = tmp_path / "adapter.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt[ADAPTER_KEY]["adapter_only"]
    merged = load_adapted_model(ckpt)
    batch = collate_examples(EXAMPLES, PAD)
    module.model.eval()
    merged.eval()
    with torch.no_grad():
        want = module.model(batch["input_ids"], batch["prev_output_tokens"])
        got = merged(batch["input_ids"], batch["prev_output_tokens"])
        plain = base.eval()(batch["input_ids"], batch["prev_output_tokens"])
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-4)  # the checkpoint carries the DDP-trained adapter
