"""W&B tracking (offline), throughput/MFU and prediction tables on a tiny CPU Trainer.

A toy LightningModule logs ``val/<source>/acc`` and fills ``last_predictions`` the way ``OFALitModule`` does
(``{stage: {source: [{"id", "task", "tokens", "prediction", "reference", "is_pad"}]}}``) for a text source
(``toy``) and a box source (``toybox``); batches follow ``ofa_lightning.data.collate``'s keys.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

pl = pytest.importorskip("pytorch_lightning")
wandb = pytest.importorskip("wandb")

from ofa_lightning.training.callbacks import (  # noqa: E402
    PredictionTables,
    StepProgressBar,
    ThroughputMonitor,
    batch_counts,
    box_iou,
    default_callbacks,
)
from ofa_lightning.training.tracking import (  # noqa: E402
    MetricsFileLogger,
    finish_wandb,
    make_wandb_logger,
    read_metrics_csv,
    read_offline_run,
    read_run_id,
    resolve_mode,
    sweep_job_name,
)

PAD = 1
SRC_TOKENS, TGT_TOKENS = 5, 3  # non-pad tokens per row (source, target)
FEATURES = 3 * 4 * 4  # patch_images (3, 4, 4) flattened
LABELS = ["cat", "dog"]


class ToyTokenizer:
    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)


def make_batch(source: str, start: int, n: int = 2, pad_rows: int = 0) -> dict:
    rows = n + pad_rows
    input_ids = torch.full((rows, SRC_TOKENS + 2), PAD)
    input_ids[:, :SRC_TOKENS] = torch.arange(10, 10 + SRC_TOKENS)
    target = torch.full((rows, TGT_TOKENS + 1), PAD)
    target[:, :TGT_TOKENS] = 7
    g = torch.Generator().manual_seed(start)
    ids = [f"{source}-{start + i}" for i in range(rows)]
    metas = []
    for i in range(rows):
        k = start + i
        if source == "toybox":
            metas.append({"reference": [0.0, 0.0, 8.0, 8.0], "w_ratio": 0.5, "h_ratio": 0.5})
        else:
            metas.append({"reference": LABELS[k % 2]})
    return {
        "input_ids": input_ids,
        "prev_output_tokens": target.clone(),
        "target": target,
        "patch_images": torch.rand(rows, 3, 4, 4, generator=g) * 2 - 1,
        "patch_masks": torch.ones(rows, dtype=torch.bool),
        "is_pad": torch.tensor([False] * n + [True] * pad_rows),
        "size": rows,
        "ids": ids,
        "tasks": [source] * rows,
        "metas": metas,
        "source": source,
    }


def loader(batches):
    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


class SlowLoader:
    """Yields ready batches after sleeping ``delay`` seconds (a loader that keeps the step waiting)."""

    def __init__(self, batches, delay):
        self.batches, self.delay = batches, delay

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            time.sleep(self.delay)
            yield b


class ToyModule(pl.LightningModule):
    """Mirrors OFALitModule's evaluation outputs: metrics per source, ``last_predictions[stage][source]``."""

    pad_id = PAD

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(FEATURES, 4)
        self.tokenizer = ToyTokenizer()
        self.last_predictions: dict = {}
        self._records: dict = {}

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch["patch_images"].flatten(1)).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch["size"])
        return loss

    def on_validation_epoch_start(self):
        self._records = {}

    def validation_step(self, batch, batch_idx):
        source = batch["source"]
        for i, sample_id in enumerate(batch["ids"]):
            k = int(sample_id.rsplit("-", 1)[1])
            ref = batch["metas"][i]["reference"]
            if source == "toybox":  # half-overlapping boxes in original pixels
                pred = [0.0, 0.0, 8.0, 4.0] if k % 2 else [float("nan")] * 4
            else:  # right for k % 4 != 3
                pred = ref if k % 4 != 3 else LABELS[(k + 1) % 2]
            self._records.setdefault(source, []).append(
                {
                    "id": sample_id,
                    "task": source,
                    "tokens": [5, 6],
                    "prediction": pred,
                    "reference": ref,
                    "is_pad": bool(batch["is_pad"][i]),
                }
            )

    def on_validation_epoch_end(self):
        stage = "test" if self.trainer.testing else "val"
        real = {s: [r for r in rs if not r["is_pad"]] for s, rs in self._records.items()}
        for source, rows in real.items():
            if source == "toy":
                acc = sum(r["prediction"] == r["reference"] for r in rows) / len(rows)
                self.log(f"{stage}/toy/acc", acc, on_epoch=True)
        self.last_predictions[stage] = self._records

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def val_batches():
    return [make_batch("toy", 0), make_batch("toy", 2, pad_rows=1), make_batch("toybox", 0), make_batch("toybox", 2)]


def fit(run_dir, logger, max_steps=4, callbacks=None, train=None):
    callbacks = (
        callbacks
        if callbacks is not None
        else [ThroughputMonitor(window=10), PredictionTables(run_dir=run_dir, max_rows=3)]
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )
    train = train if train is not None else loader([make_batch("toy", 100 + 2 * i) for i in range(8)])
    trainer.fit(ToyModule(), train_dataloaders=train, val_dataloaders=loader(val_batches()))
    return trainer


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """No live run before or after; W&B's data dir (artifact staging) inside the test's tmp dir, env restored."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    finish_wandb()
    yield
    finish_wandb()


def test_offline_run_metrics_tables_files_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DATA_DIR")  # let make_wandb_logger stage W&B's table files in the run's folder
    run_dir = tmp_path / "run"
    config = {"model": {"size": "tiny"}, "seed": 0, "blob": "x" * 40000}  # spans 2 blocks of the .wandb log
    logger = make_wandb_logger(
        run_dir, project="ofa-test", name="toy", group="g1", tags=["a", "b"], mode="offline", config=config
    )
    run_id = read_run_id(run_dir)
    assert run_id and logger.version == run_id
    assert (run_dir / "config_resolved.yaml").read_text().startswith("model:")
    started = time.time()
    throughput = ThroughputMonitor(window=10)
    trainer = fit(run_dir, logger, callbacks=[throughput, PredictionTables(run_dir=run_dir, max_rows=3)])
    assert trainer.global_step == 4
    assert wandb.run is not None and wandb.run.id == run_id
    assert wandb.run.group == "g1" and list(wandb.run.tags) == ["a", "b"] and wandb.run.project == "ofa-test"
    assert wandb.run.name == "toy" and wandb.run.config["model"] == {"size": "tiny"}
    assert finish_wandb() is True and wandb.run is None and finish_wandb() is False
    assert "WANDB_DATA_DIR" not in os.environ  # set for the run's life only

    # ---- what the offline run holds
    run = read_offline_run(run_dir)
    assert run["run_id"] == run_id and os.path.dirname(run["dir"]) == str(run_dir / "wandb")
    assert run["config"]["model"] == {"size": "tiny"} and len(run["config"]["blob"]) == 40000
    assert [s for s, _ in run["values"]["val/toy/acc"]] == [1, 3]  # Lightning's logger step: global_step - 1
    assert [v for _, v in run["values"]["val/toy/acc"]] == [0.75, 0.75]  # k = 0..3: k == 3 wrong
    for key in ("perf/samples_per_s", "perf/tokens_per_s", "perf/data_wait_s", "perf/step_time_s", "perf/mfu"):
        assert key in run["keys"], key
    tokens, samples = run["values"]["perf/tokens_per_s"][-1][1], run["values"]["perf/samples_per_s"][-1][1]
    assert tokens / samples == pytest.approx(SRC_TOKENS + TGT_TOKENS)
    assert 0 < run["values"]["perf/mfu"][-1][1] < 1
    assert run["summary"]["val/toy/acc"] == 0.75

    tables = run["tables"]
    assert set(tables) == {"val/toy/predictions", "val/toybox/predictions"}
    assert len(tables["val/toy/predictions"]) == 2  # one per validation run
    toy = tables["val/toy/predictions"][-1]
    assert toy["columns"] == ["id", "image", "prompt", "prediction", "references", "score"]
    assert [r[0] for r in toy["data"]] == ["toy-0", "toy-1", "toy-2"]  # max_rows=3, pad row left out
    image = toy["data"][0][1]  # the full table W&B staged for `wandb sync`, with its image cells
    assert toy["staged_table"] and image["_type"] == "image-file" and toy["data"][0][2] == "w10 w11 w12 w13 w14"
    # the run's folder is self-contained: every file a logged table references was staged inside it
    for entries in tables.values():
        for entry in entries:
            assert entry["media"] and all(
                f is not None and f.startswith(run["dir"] + os.sep) for f in entry["media"].values()
            ), entry["media"]
    assert image["path"] in toy["media"]
    assert not (run_dir / "wandb" / "data").exists()
    assert [r[3] for r in toy["data"]] == ["cat", "dog", "cat"] and [r[5] for r in toy["data"]] == [1.0] * 3
    box_rows = tables["val/toybox/predictions"][-1]["data"]
    image = box_rows[1][1]  # k = 1: a predicted box (k = 0 predicts NaNs: reference box only)
    assert set(image["boxes"]) == {"prediction", "reference"} and set(box_rows[0][1]["boxes"]) == {"reference"}
    assert box_rows[1][5] == pytest.approx(0.5) and box_rows[0][5] == 0.0
    # original-pixel boxes × w_ratio = h_ratio = 0.5 → the 4×4 model input
    assert image["boxes"]["prediction"][0]["position"] == {"minX": 0.0, "minY": 0.0, "maxX": 4.0, "maxY": 2.0}
    assert image["boxes"]["reference"][0]["position"] == {"minX": 0.0, "minY": 0.0, "maxX": 4.0, "maxY": 4.0}

    # ---- JSONL and CSV written next to it
    pred_file = run_dir / "predictions" / "val-step4-toybox.jsonl"
    rows = [json.loads(line) for line in pred_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["toybox-0", "toybox-1", "toybox-2"]
    assert (
        rows[1]["prediction"] == [0.0, 0.0, 8.0, 4.0]
        and rows[1]["score"] == pytest.approx(box_iou([0, 0, 8, 4], [0, 0, 8, 8]))
        and rows[1]["prompt"] == "w10 w11 w12 w13 w14"
    )
    assert sorted(p.name for p in (run_dir / "predictions").glob("*.jsonl")) == [
        "val-step2-toy.jsonl",
        "val-step2-toybox.jsonl",
        "val-step4-toy.jsonl",
        "val-step4-toybox.jsonl",
    ]
    csv_rows = read_metrics_csv(run_dir / "metrics.csv")
    assert [(r["step"], r["value"]) for r in csv_rows if r["key"] == "val/toy/acc"] == [(1, 0.75), (3, 0.75)]
    assert {r["key"] for r in csv_rows} >= {"train/loss", "perf/samples_per_s", "perf/data_wait_s", "perf/mfu"}
    csv_perf = [r["value"] for r in csv_rows if r["key"] == "perf/samples_per_s"]
    assert csv_perf == pytest.approx([v for _, v in run["values"]["perf/samples_per_s"]])
    jl = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val/toy/acc"]) for r in jl if "val/toy/acc" in r] == [(1, 0.75), (3, 0.75)]
    perf_steps = [r["step"] for r in csv_rows if r["key"] == "perf/samples_per_s"]
    assert perf_steps == [1, 2, 3]  # same steps as train/loss (batch 0 is the FLOP-counting warm-up)
    assert perf_steps == [r["step"] for r in csv_rows if r["key"] == "train/loss"][1:]

    # ---- a second Trainer on the same run dir continues the same W&B run id (a new offline segment)
    time.sleep(max(0.0, 1.1 - (time.time() - started)))  # offline folders are named to the second
    logger2 = make_wandb_logger(run_dir, project="ofa-test", name="toy", mode="offline", config=config)
    fit(run_dir, logger2, max_steps=2)
    assert wandb.run.id == run_id
    finish_wandb()
    both = read_offline_run(run_dir)
    assert both["run_id"] == run_id and len(both["dirs"]) == 2
    assert all(d.endswith("-" + run_id) for d in both["dirs"])
    assert [s for s, _ in both["values"]["val/toy/acc"]] == [1, 3, 1]
    assert len(both["tables"]["val/toy/predictions"]) == 3
    assert all(f.startswith(both["dirs"][-1]) for f in both["tables"]["val/toy/predictions"][-1]["media"].values())
    csv_rows = read_metrics_csv(run_dir / "metrics.csv")  # appended, not truncated
    assert [r["step"] for r in csv_rows if r["key"] == "val/toy/acc"] == [1, 3, 1]
    assert wandb.run is None


def test_sweep_jobs_are_named_by_their_overrides(tmp_path):
    """In a Hydra multirun job the W&B run is named by the job's values of the swept keys, not the (shared) run
    name; without the sweep's multirun.yaml, by all the job's overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from ofa_lightning.paths import CONF_DIR

    assert sweep_job_name() is None  # no Hydra job
    job = ["mixture=caption_only", "seed=1", "trainer.max_steps=5"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=job, return_hydra_config=True)
    sweep_dir = tmp_path / "multirun-20260101-000000"
    (sweep_dir / "1").mkdir(parents=True)
    # what Hydra's sweeper writes into the sweep dir and sets in each job
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["mixture=caption_only,vqa_only", "seed=0,1", "trainer.max_steps=5"]}}},
        sweep_dir / "multirun.yaml",
    )
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(sweep_dir / "1")
        cfg.hydra.job.override_dirname = "mixture=caption_only,seed=1,trainer.max_steps=5"
    HydraConfig.instance().set_config(cfg)
    try:
        assert sweep_job_name() == "mixture=caption_only,seed=1"
        assert make_wandb_logger(tmp_path / "job", name="same_for_every_job", mode="offline").experiment is not None
        assert wandb.run.name == "mixture=caption_only,seed=1"
        finish_wandb()
        (sweep_dir / "multirun.yaml").unlink()
        assert sweep_job_name() == "mixture=caption_only,seed=1,trainer.max_steps=5"
        OmegaConf.set_readonly(cfg.hydra, False)  # set_config made it read-only
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        assert sweep_job_name() is None
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def test_throughput_data_wait_flops_and_no_wandb(tmp_path):
    """Without W&B: a slow loader shows as data wait; FLOPs per sample match the Linear's; files still written."""
    monitor = ThroughputMonitor(window=10, peak_flops=1e9)
    tables = PredictionTables(run_dir=tmp_path, max_rows=2)
    train = SlowLoader([make_batch("toy", 100 + 2 * i) for i in range(6)], delay=0.05)
    trainer = fit(tmp_path, False, max_steps=5, callbacks=[monitor, tables], train=train)
    assert any(isinstance(lg, MetricsFileLogger) for lg in trainer.loggers)
    # forward 2*F*4 and weight gradient 2*F*4 per sample (no input gradient): 4*F*4
    assert monitor.flops_per_sample == pytest.approx(4 * FEATURES * 4)
    m = monitor.last_metrics
    assert m["perf/data_wait_s"] >= 0.04 and m["perf/data_wait_frac"] > 0.3
    assert m["perf/mfu"] == pytest.approx(m["perf/tflops"] * 1e12 / 1e9)
    assert m["perf/samples_per_s"] == pytest.approx(m["perf/tokens_per_s"] / (SRC_TOKENS + TGT_TOKENS))
    assert m["perf/samples_per_s"] < 2 / 0.05  # bounded by the loader: 2 samples per 50 ms
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert {r["key"] for r in rows} >= {"perf/data_wait_s", "perf/samples_per_s", "val/toy/acc", "train/loss"}
    lines = (tmp_path / "predictions" / "val-step4-toy.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["toy-0", "toy-1"]
    assert not (tmp_path / "wandb").exists() and wandb.run is None


def test_modes_disabled_and_default_callbacks(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode("auto") == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "")
    netrc.write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("dryrun") == "offline" and resolve_mode(None) == "offline"
    with pytest.raises(ValueError):
        resolve_mode("sometimes")

    assert make_wandb_logger(tmp_path / "off", mode="disabled", config={"a": 1}) is None
    assert (tmp_path / "off" / "config_resolved.yaml").read_text().strip() == "a: 1"
    assert not (tmp_path / "off" / "wandb_id").exists()
    make_wandb_logger(tmp_path / "forced", mode="offline", resume_id="myrun123")
    assert read_run_id(tmp_path / "forced") == "myrun123"

    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"tracking": {"throughput": {"window": 5, "peak_flops": 2e9}, "predictions": {"max_rows": 4, "enabled": True}}}
    )
    cbs = default_callbacks(cfg, tmp_path)
    assert [type(c) for c in cbs] == [ThroughputMonitor, PredictionTables, StepProgressBar]
    assert cbs[0].window == 5 and cbs[0].peak_flops == 2e9 and cbs[1].max_rows == 4
    assert str(cbs[1].run_dir) == str(tmp_path)
    cfg = OmegaConf.create({"tracking": {"throughput": {"enabled": False}}})
    assert [type(c) for c in default_callbacks(cfg, tmp_path)] == [PredictionTables, StepProgressBar]
    assert len(default_callbacks(OmegaConf.create({}), tmp_path)) == 3


def test_with_ofa_module_and_collate(tmp_path):
    """The real OFALitModule + collate: records, prompts decoded from input_ids, images from patch_images."""
    from ofa_lightning.data.collate import collate_examples, collate_grouped
    from ofa_lightning.generation import GenerationConfig
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.tasks.base import Example, Task
    from ofa_lightning.training import OFALitModule

    class Words:
        bos_id, pad_id, eos_id = 0, PAD, 2
        code_range, bin_range = (40, 44), (44, 48)

        def decode(self, ids, skip_special=True):
            return " ".join(f"w{i}" for i in ids if i >= 4)

    class WordTask(Task):
        name, metrics, inference = "words", ("accuracy",), "generate"

        def generation_config(self):
            return GenerationConfig(beam_size=1, max_len_b=3, min_len=1)

        def parse_prediction(self, tokens, example=None):
            return self.decode_text(tokens)

    torch.manual_seed(0)
    examples = [
        Example(
            id=f"w-{i}",
            task="words",
            source=[0, 10 + i, 11, 2],
            prev_output=[0, 20 + i],
            target=[20 + i, 2],
            image=torch.zeros(3, 8, 8),
            meta={"reference": f"w{20 + i}"},
        )
        for i in range(3)
    ]
    batch = collate_examples(examples, PAD)
    assert batch_counts(batch, PAD)[0] == 3 and int(batch_counts(batch, PAD)[1]) == 3 * (4 + 2)
    grouped = collate_grouped(examples, ["image-text", "other", "other"], PAD)
    assert batch_counts(grouped, PAD)[0] == 3 and int(batch_counts(grouped, PAD)[1]) == 3 * (4 + 2)

    tok = Words()
    config = OFAConfig.from_name(
        "tiny",
        encoder_layers=1,
        decoder_layers=1,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=48,
    )
    module = OFALitModule(config, tokenizer=tok, tasks={"words": WordTask(tok)}, optim={"lr": 1e-3, "max_steps": 4})
    monitor = ThroughputMonitor(window=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        log_every_n_steps=1,
        logger=False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[monitor, PredictionTables(run_dir=tmp_path, max_rows=2)],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, train_dataloaders=loader([batch, batch]), val_dataloaders=loader([dict(batch, source="words")]))
    assert monitor.flops_per_sample and monitor.flops_per_sample > 0  # measured through the real model
    rows = [json.loads(line) for line in (tmp_path / "predictions" / "val-step2-words.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["w-0", "w-1"] and [r["prompt"] for r in rows] == ["w10 w11", "w11 w11"]
    assert [r["references"] for r in rows] == ["w20", "w21"]
    assert all(r["prediction"] == module.last_predictions["val"]["words"][k]["prediction"] for k, r in enumerate(rows))
    keys = {r["key"] for r in read_metrics_csv(tmp_path / "metrics.csv")}
    assert {"val/words/accuracy", "train/loss", "perf/samples_per_s"} <= keys
