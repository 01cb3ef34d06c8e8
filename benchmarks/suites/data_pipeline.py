"""Data-pipeline throughput per core: 480 px caption samples from COCO-sized (640x480) JPEGs.

``python benchmarks/suites/data_pipeline.py [--samples N] [--rounds R] [--json out.json] [--skip-demo-check]``

What is measured (one process, ``torch.set_num_threads(1)``, so samples/s = samples/s per core):

ours
    the per-sample path a DataLoader worker runs, through the real pieces: the shard tar is read
    (``shards.iter_tar_samples`` / ``TarIndex``), each sample is decoded (``samples.decode_sample``: JSON + JPEG
    decode, by torchvision's libjpeg-turbo behind a PIL image, ``images/jpeg.py``), built by ``CaptionTask.build_example`` (OFA's image transform, caption cleaning, BPE of prompt
    and target) and the examples are collated into batches of 8.

    * ``caption-480-train``: ``MixtureStream.batches`` (the training worker loop: resampled shards, shuffle buffer,
      ``build_example(train=True)``, ``collate_examples``) over the default (``mode=finetune``) caption task, OFA's
      caption fine-tuning pipeline: ``SquashResize(480)`` (bicubic) -> ToTensor -> Normalize, a random reference
      as the target.
    * ``caption-480-eval``: ``EvalDataset[i]`` + ``EvalCollate`` (the validation loader) over the same task.
    * ``caption-480-pretrain-train`` (table only, not the caption recipe): the training loop over a caption task with OFA's pre-training augmentation at
      480: ``RandomResize([480], max_size=672)`` -> ``CenterCrop(480)`` -> ``RandomAugment(2, 7)`` -> ToTensor ->
      Normalize (``mode=pretrain, image_size=480``).

peer ("plain PIL decode+resize")
    ``Image.open(bytes).convert("RGB").resize((480, 480), BICUBIC)`` + ``torchvision.transforms.functional.to_tensor``
    on JPEG bytes already in memory: no tar, no JSON, no normalisation, no tokenising, no collate.

Each configuration runs ``rounds`` interleaved rounds of ``samples`` samples for ours and for the peer; the
reported rate is ``samples / CPU seconds`` of this process (``time.process_time``; = per-core throughput, and
insensitive to other processes on a shared machine) in the best round; wall-clock rates and medians are printed
too. Before timing, every sample of the eval and pre-training configurations is also built through a *reference*
copy of the pipeline as it was before the speed changes (PIL's JPEG decode and its ``.convert("RGB")`` copy, Pillow's resize, a
channels-last ToTensor, PIL's affine for RandomAugment's translations): the token lists must be identical and the
image tensors identical or within one 8-bit level (the shrinking resize runs on torch's uint8 kernel, which rounds
about 0.2 % of the pixels differently from Pillow by 1/255).

The shards: ``--samples`` (default 200) synthetic 640x480 JPEGs (quality 90; smooth gradients, sinusoidal texture,
shapes, blur and grain, ~100 KiB each), written with ``webdataset.TarWriter`` in the caption schema (``json``:
id, source, split, image_id, captions, width, height; ``jpg``: the bytes), 100 samples per shard, in a temp dir.
Tokenizer: ``OFATokenizer.from_ofa_files($OFA_BPE_DIR or /work/shared/ofa_bpe)``, else a BPE trained on the
captions.

Demo check (``--skip-demo-check`` to skip): would the demo's training loop (``experiment=demo``: shapes data,
caption + VQA + grounding mixture, micro-batch 16, 128 px, 2 workers, OFA-Tiny on CPU) wait on data? It times the
real ``OFADataModule`` train loader (2 workers) and one tiny-model optimisation step on its batches.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO, REPO / "benchmarks" / "harness"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_model  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

NAME = "data_samples_per_s_per_core"
PEER_NAME = "plain PIL decode+resize"
TARGET = 200.0  # samples/s per core (the data issue's goal)
BATCH = 8
IMAGE = 480
SHARD_SIZE = 100
CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs are playing with a red frisbee in the park!",
    "A plate of food with broccoli, rice and a fork.",
    "A kitchen with wooden cabinets; a stove and a window.",
    "A person holding an umbrella on a rainy city street.",
    "A giraffe standing next to a tall tree in a field.",
    "A train pulling into a station at night - lights on.",
    "Several people sitting on a bench near the water.",
]


# ---------------------------------------------------------------------------------------------------- shards
def synthetic_jpeg(rng: np.random.Generator, width: int = 640, height: int = 480, quality: int = 90) -> bytes:
    """A photo-like JPEG: colour gradient + sinusoidal textures + shapes, slightly blurred, with grain."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    img = np.stack(
        [c[i, 0] + (c[i, 1] - c[i, 0]) * xx / width * 0.7 + (c[i, 2] - c[i, 0]) * yy / height * 0.5 for i in range(3)],
        -1,
    )
    for _ in range(3):  # textured areas (fabric / foliage-like)
        fx, fy, phase, amp = rng.uniform(0.02, 0.4), rng.uniform(0.02, 0.4), rng.uniform(0, 6.3), rng.uniform(8, 30)
        img += (amp * np.sin(fx * xx + fy * yy + phase))[..., None] * rng.uniform(0.3, 1.0, 3).astype(np.float32)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(-50, width)), int(rng.integers(-50, height))
        x1, y1 = x0 + int(rng.integers(20, 260)), y0 + int(rng.integers(20, 220))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.polygon([(x0, y0), (x1, y0 + (y1 - y0) // 3), ((x0 + x1) // 2, y1)], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(0.8))
    coarse = rng.normal(128, 8, (height // 2, width // 2, 3))
    coarse = np.asarray(
        Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR), np.float32
    )
    pixels = np.asarray(im, np.float32) + (coarse - 128) + rng.normal(0, 8, (height, width, 3)).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_caption_shards(folder: str | Path, samples: int, seed: int = 0, shard_size: int = SHARD_SIZE) -> list[str]:
    """``samples`` synthetic 640x480 caption samples in ``train-NNNNNN.tar`` shards; returns the shard paths."""
    import webdataset as wds

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    urls: list[str] = []
    for start in range(0, samples, shard_size):
        url = str(folder / f"train-{len(urls):06d}.tar")
        with wds.TarWriter(url) as writer:
            for i in range(start, min(samples, start + shard_size)):
                picks = rng.choice(len(CAPTIONS), 5, replace=False)
                fields = {
                    "id": f"syn{i:06d}",
                    "source": "synthetic",
                    "split": "train",
                    "image_id": i,
                    "captions": [CAPTIONS[j] for j in picks],
                    "width": 640,
                    "height": 480,
                }
                writer.write(
                    {"__key__": f"{i:06d}", "json": json.dumps(fields).encode("utf-8"), "jpg": synthetic_jpeg(rng)}
                )
        urls.append(url)
    return urls


def load_tokenizer():
    from ofa_lightning.tokenizer import OFATokenizer

    path = os.environ.get("OFA_BPE_DIR", "/work/shared/ofa_bpe")
    try:
        return OFATokenizer.from_ofa_files(path), f"OFA BPE ({path})"
    except (OSError, ValueError) as exc:
        print(f"  (OFA BPE files not usable at {path}: {type(exc).__name__}; training a BPE on the captions)")
        return OFATokenizer.train_bpe(CAPTIONS * 4, bpe_vocab_size=400, min_frequency=1), "trained BPE (fallback)"


# ---------------------------------------------------------------------------------------------------- pipelines
CONFIGS = {
    # name: (task options, train, loader, in the JSON results)
    "caption-480-train": ({}, True, "stream", True),
    "caption-480-eval": ({}, False, "eval", True),
    "caption-480-pretrain-train": ({"mode": "pretrain", "image_size": IMAGE}, True, "stream", False),
}


def make_task(tokenizer, options: dict[str, Any]):
    from ofa_lightning.tasks.caption import CaptionTask

    return CaptionTask(tokenizer, **options)


def ours_batches(task, urls: list[str], loader: str, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Endless batches of ``BATCH`` examples through the real loader pieces of the given kind."""
    if loader == "stream":
        from ofa_lightning.data.stream import MixtureStream, StreamSource

        stream = MixtureStream(
            [StreamSource("caption", task, urls)], BATCH, seed=seed, shuffle_buffer=64, pad_id=task.tokenizer.pad_id
        )
        yield from stream.batches(rank=0, worker=0, num_workers=1)
        return
    from ofa_lightning.data.evaluation import EvalCollate, EvalDataset

    dataset = EvalDataset("caption", task, urls, seed=seed)
    collate = EvalCollate("caption", task.tokenizer.pad_id)
    try:
        while True:
            for start in range(0, len(dataset), BATCH):
                yield collate([dataset[i] for i in range(start, min(len(dataset), start + BATCH))])
    finally:
        dataset.close()


def peer_sample(jpg: bytes) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    image = Image.open(io.BytesIO(jpg)).convert("RGB").resize((IMAGE, IMAGE), Image.BICUBIC)
    return TF.to_tensor(image)


@contextmanager
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - w0, time.process_time() - c0


def measure_config(
    name: str, tokenizer, urls: list[str], jpgs: list[bytes], samples: int, rounds: int
) -> dict[str, Any]:
    options, train, loader, _ = CONFIGS[name]
    task = make_task(tokenizer, options)
    n_batches = max(1, math.ceil(samples / BATCH))

    def ours() -> int:
        # a fresh stream with the same seed every round: every round does the same work (same samples, same
        # RandomAugment draws), so rounds differ only by the machine; the shuffle buffer fill is included
        batches = ours_batches(task, urls, loader)
        got = sum(next(batches)["size"] for _ in range(n_batches))
        batches.close()
        return got

    def peer() -> int:
        for i in range(n_batches * BATCH):
            peer_sample(jpgs[i % len(jpgs)])
        return n_batches * BATCH

    warm = ours_batches(task, urls, loader)  # warm-up: first-call costs, file cache
    for _ in range(min(4, n_batches)):
        next(warm)
    warm.close()
    peer_sample(jpgs[0])
    runs: dict[str, list[tuple[int, float, float]]] = {"ours": [], "peer": []}
    for _ in range(rounds):  # interleaved, so both see the same machine state
        runs["ours"].append(_timed(ours))
        runs["peer"].append(_timed(peer))
    out: dict[str, Any] = {"config": name, "train": train, "loader": loader}
    for who, rs in runs.items():
        cpu = [n / c for n, _, c in rs]
        wall = [n / w for n, w, _ in rs]
        out[who] = {
            "cpu_best": max(cpu),
            "cpu_median": statistics.median(cpu),
            "wall_best": max(wall),
            "wall_median": statistics.median(wall),
            "samples": rs[0][0],
        }
    out["augment"] = (
        "RandomResize+CenterCrop+RandomAugment(2,7)" if options.get("mode") == "pretrain" else "SquashResize(480)"
    )
    return out


# ---------------------------------------------------------------------------------------------------- checks
def _reference_task(tokenizer, options: dict[str, Any]):
    """The caption task with the pipeline as it was before the speed changes (the values must not change)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from ofa_lightning import images as T
    from ofa_lightning.tasks.caption import CaptionTask
    from ofa_lightning.tasks.common import PRETRAIN_MAX_SIZE, pretrain_scales

    class RefToTensor(T.Transform):  # the channels-last view converted as is
        def apply(self, image, target, rng):
            return F.to_dtype(F.to_image(image), torch.float32, scale=True).as_subclass(torch.Tensor), target

    class RefRandomAugment(T.RandomAugment):  # translations through PIL's generic affine
        def apply_op(self, name, arg, image, target):
            if name in ("TranslateX", "TranslateY"):
                shift = [-arg, 0.0] if name == "TranslateX" else [0.0, -arg]
                return T._apply(
                    F.affine,
                    image,
                    target,
                    angle=0.0,
                    translate=shift,
                    scale=1.0,
                    shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR,
                    fill=[float(self.fill)] * 3,
                )
            return super().apply_op(name, arg, image, target)

    class RefSquashResize(T.SquashResize):  # Pillow's own resize for every image
        def apply(self, image, target, rng):
            h0, w0 = T.image_size(image)
            image, target = T._apply(
                F.resize, image, target, size=list(self.size), interpolation=self.interpolation, antialias=True
            )
            target["w_ratio"] = float(target.get("w_ratio", 1.0)) * T.image_size(image)[1] / w0
            target["h_ratio"] = float(target.get("h_ratio", 1.0)) * T.image_size(image)[0] / h0
            return image, target

    class RefCaption(CaptionTask):
        def build_transform(self, train):
            size = int(self.cfg["image_size"])
            if self.cfg.get("mode") == "pretrain" and train:
                return T.Compose(
                    [
                        T.RandomResize(pretrain_scales(size), max_size=PRETRAIN_MAX_SIZE),
                        T.CenterCrop(size),
                        RefRandomAugment(2, 7),
                        RefToTensor(),
                        self.normalize(),
                    ]
                )
            return T.Compose([RefSquashResize(size), RefToTensor(), self.normalize()])

    return RefCaption(tokenizer, **options)


ONE_LEVEL = 2.0 / 255.0  # one 8-bit level after OFA's (x - 0.5) / 0.5


def check_identical(tokenizer, urls: list[str], jpgs: list[bytes]) -> dict[str, Any]:
    """Every sample through our pipeline and the reference one with the same rng: identical tokens, and images
    identical or (where the shrinking resize ran on torch's uint8 kernel instead of Pillow's) within one 8-bit
    level. Also: how far the eval image is from the peer's tensor (normalised the same way)."""
    from ofa_lightning.data.samples import build_example
    from ofa_lightning.data.shards import iter_tar_samples
    from ofa_lightning.images import image_tensor

    raws = [raw for url in urls for raw in iter_tar_samples(url)]
    report: dict[str, Any] = {}
    for name in ("caption-480-pretrain-train", "caption-480-eval"):
        options, train, _, _ = CONFIGS[name]
        task, ref = make_task(tokenizer, options), _reference_task(tokenizer, options)
        augment = next((t for t in task.build_transform(train).transforms if hasattr(t, "sample_ops")), None)
        same, close, worst, translated, peer_diff = 0, 0, 0.0, 0, 0.0
        for k, raw in enumerate(raws):
            ex = build_example(task, raw, train=train, rng=random.Random(k))
            ex.image = image_tensor(ex.image)  # the loaders leave the normalisation to the collate
            fields = json.loads(raw["json"])
            img = Image.open(io.BytesIO(raw["jpg"]))
            img.load()
            want = ref.build_example(fields, img.convert("RGB"), train, random.Random(k))
            tokens_ok = ex.source == want.source and ex.prev_output == want.prev_output and ex.target == want.target
            diff = float((ex.image - want.image).abs().max())
            same += int(tokens_ok and diff == 0.0)
            close += int(tokens_ok and diff <= ONE_LEVEL + 1e-6)
            worst = max(worst, diff)
            if augment is not None:  # RandomResize([480]) draws nothing: RandomAugment's draws come first
                translated += int(any(op.startswith("Translate") for op, _ in augment.sample_ops(random.Random(k))))
            else:
                peer_img = (peer_sample(jpgs[k]) - 0.5) / 0.5
                peer_diff = max(peer_diff, float((ex.image - peer_img).abs().max()))
        report[name] = {"identical": same, "within_one_level": close, "max_abs_diff": worst, "of": len(raws)}
        if train:
            report[name]["with_translate"] = translated
        else:
            report[name]["max_abs_diff_vs_peer"] = peer_diff
    return report


# ---------------------------------------------------------------------------------------------------- demo check
def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def demo_data_wait(batches: int = 30, steps: int = 4, seed: int = 0) -> dict[str, Any]:
    """Would the demo's training loop wait on data? The real ``OFADataModule`` train loader of
    ``experiment=demo`` (shapes shards, caption+VQA+grounding, micro-batch 16, 128 px, 2 workers) against one
    OFA-Tiny optimisation step (forward, backward, AdamW) on its batches.

    Measured: the CPU time one worker spends per batch (1 thread), the wall time per batch of the 2-worker
    DataLoader, and the step both as CPU time on 1 thread and as wall time with the process's threads (as
    ``trainer=cpu``). Best of ``steps`` steps: the step is the noisy part on a shared machine."""
    import torch.nn.functional as TF

    from data_recipes.shapes_pipeline import build_shapes_shards
    from ofa_lightning.data import OFADataModule
    from ofa_lightning.data.shards import iter_tar_samples, resolve_shards
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.speed import build_model
    from ofa_lightning.tokenizer import OFATokenizer

    conf = REPO / "conf"
    data_cfg = _yaml(conf / "data" / "shapes.yaml")
    mixture = _yaml(conf / "mixture" / "caption_vqa_grounding.yaml")
    experiment = _yaml(conf / "experiment" / "demo.yaml")
    exp_data = experiment.get("data") or {}
    micro_batch = int(exp_data.get("micro_batch_size", data_cfg.get("micro_batch_size", 8)))
    task_options = dict(exp_data.get("task_options") or {"image_size": 128})
    workers = int(exp_data.get("num_workers", data_cfg.get("num_workers", 2)))
    size = next(
        (
            d["override /model"]
            for d in experiment.get("defaults") or []
            if isinstance(d, dict) and "override /model" in d
        ),
        "tiny",
    )

    with tempfile.TemporaryDirectory(prefix="ofa_demo_wait_") as tmp:
        build_shapes_shards(Path(tmp), num_images=200, seed=seed, image_size=int(task_options.get("image_size", 128)))
        shards = Path(tmp) / "shards"
        texts = [
            c
            for u in resolve_shards(str(shards / "coco_caption"), "train")
            for s in iter_tar_samples(u)
            for c in json.loads(s["json"])["captions"]
        ]
        texts += [
            json.loads(s["json"])["question"]
            for u in resolve_shards(str(shards / "vqav2"), "train")
            for s in iter_tar_samples(u)
        ]
        tokenizer = OFATokenizer.train_bpe(texts, bpe_vocab_size=600, num_codes=0, num_bins=1000)  # tokenizer: trained
        if "vqa" in mixture:
            mixture["vqa"].setdefault("options", {})["candidates"] = str(shards / "vqav2" / "answers.json")
        dm = OFADataModule(
            mixture=mixture,
            shards_root=str(shards),
            micro_batch_size=micro_batch,
            num_workers=workers,
            shuffle_buffer=int(data_cfg.get("shuffle_buffer", 64)),
            batches_per_epoch=None,
            persistent_workers=False,
            pin_memory=False,
            task_options=task_options,
            tokenizer=tokenizer,
            seed=seed,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()

        # one worker's work per batch, on one core
        with single_thread():
            stream = dm.train_dataset.batches(rank=0, worker=0, num_workers=1)
            for _ in range(3):
                next(stream)
            c0 = time.process_time()
            kept = [next(stream) for _ in range(batches)]
            cpu_per_batch = (time.process_time() - c0) / batches
            stream.close()

        # the real DataLoader with its workers (wall clock; this process only waits)
        it = iter(loader)
        for _ in range(2 * max(1, workers)):
            next(it)
        w0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        loader_per_batch = (time.perf_counter() - w0) / batches
        del it  # (persistent_workers=False) the workers stop with their iterator

        torch.manual_seed(seed)
        model = build_model(OFAConfig.from_name(size, vocab_size=tokenizer.vocab_size)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
        pad = tokenizer.pad_id

        def step(batch: dict[str, Any]) -> None:
            opt.zero_grad(set_to_none=True)
            enc = model.encode(batch["input_ids"], batch["patch_images"], batch["patch_masks"])
            logits = model.decode(batch["prev_output_tokens"], enc)
            loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["target"].reshape(-1), ignore_index=pad)
            loss.backward()
            opt.step()

        threads = torch.get_num_threads()
        step(kept[0])
        walls = []
        for b in kept[1 : 1 + steps]:
            walls.append(_timed(lambda: step(b) or 1)[1])
        with single_thread():
            step(kept[0])
            cpus = [_timed(lambda: step(b) or 1)[2] for b in kept[1 : 1 + steps]]
    step_wall, step_cpu = min(walls), min(cpus)
    return {
        "micro_batch": micro_batch,
        "image_size": task_options.get("image_size"),
        "workers": workers,
        "model": size,
        "threads": threads,
        "cpu_ms_per_batch": cpu_per_batch * 1e3,
        "loader_ms_per_batch": loader_per_batch * 1e3,
        "step_ms": step_wall * 1e3,
        "step_cpu_ms_1_thread": step_cpu * 1e3,
        "waits": loader_per_batch > step_wall,
        "data_cpu_share": cpu_per_batch / (cpu_per_batch + step_cpu),
    }


# ---------------------------------------------------------------------------------------------------- driver
def run(
    samples: int = 200,
    rounds: int = 5,
    check: bool = True,
    demo: bool = False,
    details: dict[str, Any] | None = None,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Measures both modes and returns the result objects (see the module doc). ``details`` (a dict), when
    given, receives every measurement, the identity check and the demo check. Use ``samples >= 200``: a round of
    the train configuration includes filling the 64-sample shuffle buffer and RandomAugment's random op mix,
    both of which only average out over a few hundred samples."""
    from ofa_lightning.data.shards import iter_tar_samples

    say = print if verbose else (lambda *a, **k: None)
    samples = max(BATCH, int(samples))
    with single_thread(), tempfile.TemporaryDirectory(prefix="ofa_data_bench_") as tmp:
        t0 = time.perf_counter()
        urls = write_caption_shards(tmp, samples)
        jpgs = [raw["jpg"] for url in urls for raw in iter_tar_samples(url)]
        say(
            f"shards: {len(jpgs)} synthetic 640x480 JPEGs (q90, mean {np.mean([len(j) for j in jpgs]) / 1024:.0f} "
            f"KiB) in {len(urls)} tar(s), made in {time.perf_counter() - t0:.1f}s"
        )
        tokenizer, tok_name = load_tokenizer()
        say(f"tokenizer: {tok_name}; torch threads: {torch.get_num_threads()}")
        checks = check_identical(tokenizer, urls, jpgs) if check else {}
        for name, c in checks.items():
            extra = (
                f", {c['with_translate']} with a translation"
                if "with_translate" in c
                else f", max |ours - normalised peer| = {c['max_abs_diff_vs_peer']:.2g}"
            )
            say(
                f"check {name}: {c['identical']}/{c['of']} examples identical to the reference pipeline, "
                f"{c['within_one_level']}/{c['of']} within one 8-bit level (max |diff| {c['max_abs_diff']:.3g}){extra}"
            )
            if c["within_one_level"] != c["of"]:
                raise AssertionError(f"{name}: the pipeline's results changed ({c})")
        measured = [measure_config(name, tokenizer, urls, jpgs, samples, rounds) for name in CONFIGS]
    demo_res = demo_data_wait() if demo else None

    results = []
    cpu = cpu_model()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    say("")
    say(
        f"{'config':28s} {'ours':>8s} {'peer':>8s} {'ratio':>6s}   {'ours wall':>9s} {'peer wall':>9s}  "
        f"(samples/s per core = per CPU-second, best of {rounds} rounds; wall = best wall-clock rate)"
    )
    for m in measured:
        ours, peer = m["ours"]["cpu_best"], m["peer"]["cpu_best"]
        flag = "" if ours >= TARGET else f"  < target {TARGET:.0f}"
        say(
            f"{m['config']:28s} {ours:8.1f} {peer:8.1f} {ours / peer:6.2f}   {m['ours']['wall_best']:9.1f} "
            f"{m['peer']['wall_best']:9.1f}  {m['augment']}{flag}"
        )
        if CONFIGS[m["config"]][3]:
            results.append(
                {
                    "name": NAME,
                    "config": m["config"],
                    "ours": round(ours, 2),
                    "peer": round(peer, 2),
                    "ratio": round(ours / peer, 4),
                    "unit": "samples/s",
                    "better": "higher",
                    "peer_name": PEER_NAME,
                    "date": when,
                    "cpu": cpu,
                    "rounds": rounds,
                }
            )
    say(
        f"(peer = plain PIL decode + 480x480 bicubic resize + to_tensor from in-memory bytes, in every row; ours adds "
        f"tar, JSON, normalisation, tokenising and collate; target >= {TARGET:.0f})"
    )
    if demo_res:
        d = demo_res
        say("")
        say(
            f"demo loop (experiment=demo: micro-batch {d['micro_batch']}, {d['image_size']} px, caption+vqa+grounding, "
            f"{d['workers']} workers, OFA-{d['model']}):"
        )
        say(
            f"  data: {d['cpu_ms_per_batch']:.1f} ms of one core per batch; the {d['workers']}-worker DataLoader "
            f"delivers a batch every {d['loader_ms_per_batch']:.1f} ms"
        )
        say(
            f"  step: {d['step_ms']:.0f} ms wall ({d['threads']} threads), "
            f"{d['step_cpu_ms_1_thread']:.0f} ms on 1 thread"
        )
        say(
            f"  -> {'the loop WAITS on data' if d['waits'] else 'the loop does not wait on data'}; data is "
            f"{100 * d['data_cpu_share']:.1f}% of the CPU work per step; a step would have to take under "
            f"{d['loader_ms_per_batch']:.0f} ms (e.g. on a GPU) before the {d['workers']} workers became the limit"
        )
    if details is not None:
        details.update({"measured": measured, "checks": checks, "demo": demo_res})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="synthetic samples (and samples per timed round)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per configuration")
    parser.add_argument("--json", type=Path, default=None, help="write the result objects here")
    parser.add_argument("--details", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--skip-check", action="store_true", help="skip the identical-results check")
    parser.add_argument("--skip-demo-check", action="store_true", help="skip the demo data-wait check")
    args = parser.parse_args(argv)
    details: dict[str, Any] = {}
    results = run(args.samples, args.rounds, check=not args.skip_check, demo=not args.skip_demo_check, details=details)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.details:
        args.details.write_text(json.dumps(details, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
