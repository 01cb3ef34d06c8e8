"""Every OFA recipe preset in conf/experiment/ composes with its documented metadata, and runs a fast dev run on
shapes-sized data: the shapes shards for the recipes the shapes generator covers (COCO captions, VQAv2, RefCOCO,
SNLI-VE, detection, text), and shards written by the real recipes (imagenet, glue, gigaword, vq_codes) from tiny
raw files derived from the shapes raw data for the others. The presets' model / image size / batch are shrunk on
the command line (``model=tiny`` with one layer, 64 px, CPU, 3 steps); everything else is the preset's own."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_recipes import cli as recipes_cli
from data_recipes.shapes_pipeline import build_shapes_shards
from ofa_lightning.paths import CONF_DIR
from ofa_lightning.training.run import compose_config, train

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("demo"))
OFA_FAMILIES = (
    "caption_stage1",
    "caption_stage2",
    "vqa",
    "refcoco",
    "refcocoplus",
    "refcocog",
    "snli_ve",
    "imagenet",
    "glue",
    "gigaword",
    "text_to_image",
    "pretrain",
)


def is_ofa_recipe(preset: str) -> bool:
    """This issue's recipe presets (other presets in conf/experiment/ only have to compose here)."""
    return preset.startswith(OFA_FAMILIES) and preset.rsplit("_", 1)[-1] in (
        "tiny",
        "medium",
        "base",
        "large",
        "huge",
        "beam",
        "480",
    )


# One preset per recipe family runs in the fast suite; the size variants only change scalars of their family's
# root (checked by composition here) and run in the slow suite.
ROOTS = [
    "caption_stage1_large",
    "caption_stage2_large",
    "vqa_large",
    "vqa_large_beam",
    "refcoco_large",
    "refcocoplus_large",
    "refcocog_large",
    "snli_ve_large",
    "imagenet_large",
    "glue_rte_large",
    "gigaword_large",
    "text_to_image_large",
    "pretrain_large",
    "mixture_sweep",
]
FAMILY_SIZES = {
    "caption_stage1": 5,
    "caption_stage2": 5,
    "vqa": 5,
    "refcoco": 5,
    "refcocoplus": 5,
    "refcocog": 5,
    "snli_ve": 5,
}

# task -> shapes-derived shards it reads in the tests
TASK_SHARDS = {
    "caption": "coco_caption",
    "image_text_matching": "coco_caption",
    "vqa": "vqav2",
    "qa_matching": "vqav2",
    "grounding": "refcoco",
    "grounded_caption": "refcoco",
    "snli_ve": "snli_ve",
    "detection": "detection",
    "text_infilling": "text_corpus",
    "image_classification": "imagenet",
    "gigaword": "gigaword",
    "text_to_image": "vq_codes",
    "image_infilling": "vq_codes",
}
TEXT_ONLY = {"glue", "gigaword", "text_infilling", "text_to_image"}
EVAL_SPLITS = {
    "snli_ve": ("dev", "test"),
    "glue": ("dev", "dev"),
    "gigaword": ("valid", "test"),
    "imagenet": ("val", "val"),
    "text_corpus": (None, None),
}
TINY = [
    "debug=fdr",
    "logger=none",
    "model=tiny",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.encoder_ffn_dim=256",
    "model.decoder_ffn_dim=256",
    "trainer=cpu",
    "trainer.devices=1",
    "++trainer.num_nodes=1",
    "trainer.accumulate_grad_batches=1",
    "data.micro_batch_size=4",
    "data.eval.micro_batch_size=4",
    "tokenizer=trained",
    "tokenizer.bpe_vocab_size=300",
    "tokenizer.num_codes=64",
    "tokenizer.max_samples=200",
    "module.init_from=null",
    "model.interpolate_position=false",
    "data.pin_memory=false",
    "++module.optim.warmup_steps=null",
]
CODES = 16  # 4x4 VQ codes: code_image_size 32 in the tests


# ------------------------------------------------------------------------------------------------ data
def _write_raw(raw: Path, out: Path, seed: int = 0) -> dict[str, list[str]]:
    """Tiny raw files in the official formats of the recipes shapes does not cover, from the shapes raw data."""
    rng = random.Random(seed)
    karpathy = json.loads((raw / "dataset_coco.json").read_text())
    inst = json.loads((raw / "refcoco" / "instances.json").read_text())
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    first_cat: dict[int, str] = {}
    for ann in inst["annotations"]:
        first_cat.setdefault(ann["image_id"], cats[ann["category_id"]])
    images = []  # (split, file path, captions, category)
    for img in karpathy["images"]:
        split = {"restval": "train"}.get(img["split"], img["split"])
        path = raw / "images" / split / img["filename"]
        if path.is_file() and img["cocoid"] in first_cat:
            images.append((split, path, [s["raw"] for s in img["sentences"]], first_cat[img["cocoid"]]))
    commands: dict[str, list[str]] = {}

    # ImageNet-style class folders + synset words
    names = sorted(set(cats.values()))
    wnid = {n: f"n{i:08d}" for i, n in enumerate(names)}
    inet = out / "raw_imagenet"
    for split, path, _, cat in images:
        target = inet / ("val" if split == "test" else split) / wnid[cat] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (out / "synset_words.txt").write_text("".join(f"{wnid[n]} {n}\n" for n in names))
    commands["imagenet"] = ["imagenet", "--root", str(inet), "--synsets", str(out / "synset_words.txt")]

    # GLUE (official layout with headers; CoLA headerless): sentences are captions, labels arbitrary
    glue_root = out / "raw_glue"
    heads = {
        "sst2": ["sentence", "label"],
        "mrpc": ["Quality", "#1 String", "#2 String"],
        "qqp": ["question1", "question2", "is_duplicate"],
        "qnli": ["question", "sentence", "label"],
        "rte": ["sentence1", "sentence2", "label"],
        "mnli": ["sentence1", "sentence2", "gold_label"],
    }
    labels = {
        "sst2": ["0", "1"],
        "mrpc": ["0", "1"],
        "qqp": ["0", "1"],
        "qnli": ["entailment", "not_entailment"],
        "rte": ["entailment", "not_entailment"],
        "mnli": ["entailment", "neutral", "contradiction"],
        "cola": ["0", "1"],
    }
    for task in ["cola", *heads]:
        folder = glue_root / task
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "dev"):
            rows = [c for s, _, caps, _ in images if s == ("train" if split == "train" else "val") for c in caps[:2]]
            lines = [] if task == "cola" else ["\t".join(heads[task])]
            for i, text in enumerate(rows):
                label = labels[task][i % len(labels[task])]
                other = rows[(i + 1) % len(rows)]
                if task == "cola":
                    lines.append(f"src\t{label}\t*\t{text}")
                else:
                    values = {
                        "sentence": text,
                        "#1 String": text,
                        "question1": text,
                        "question": text,
                        "sentence1": text,
                        "#2 String": other,
                        "question2": other,
                        "sentence2": other,
                    }
                    lines.append("\t".join(values.get(h, label) for h in heads[task]))
            (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        commands[f"glue_{task}"] = ["glue", "--task", task, "--data-dir", str(folder)]

    # Gigaword: article = all captions of an image, summary = its first caption
    giga = out / "raw_gigaword"
    giga.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        sel = [caps for s, _, caps, _ in images if s == split]
        (giga / f"{name}.src").write_text("".join(" ".join(c) + "\n" for c in sel))
        (giga / f"{name}.tgt").write_text("".join(c[0] + "\n" for c in sel))
    commands["gigaword"] = ["gigaword", "--data-dir", str(giga)]

    # VQ codes (random 4x4 codes) with captions and images, for text-to-image and image infilling
    codes_dir = out / "raw_codes"
    codes_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "vq_codes",
        "--codebook-size",
        "64",
        "--images",
        *[str(raw / "images" / s) for s in ("train", "val", "test")],
    ]
    for split in ("train", "val", "test"):
        with open(codes_dir / f"{split}.jsonl", "w") as f:
            for s, path, caps, _ in images:
                if s == split:
                    f.write(
                        json.dumps(
                            {
                                "id": path.stem,
                                "codes": [rng.randrange(64) for _ in range(CODES)],
                                "caption": caps[0],
                                "image": path.name,
                            }
                        )
                        + "\n"
                    )
        args += ["--codes", f"{split}={codes_dir / f'{split}.jsonl'}"]
    commands["vq_codes"] = args
    return commands


def build_preset_shards(root: Path, num_images: int = 40, seed: int = 1, image_size: int = 64) -> Path:
    """``root/shards/<name>`` for every recipe a preset reads (shapes + derived); returns the shards root."""
    shapes = root / "shapes"
    build_shapes_shards(shapes, num_images=num_images, seed=seed, image_size=image_size)
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for name in ("coco_caption", "vqav2", "refcoco", "snli_ve", "detection", "text_corpus"):
        (shards / name).symlink_to(shapes / "shards" / name, target_is_directory=True)
    for name, argv in _write_raw(shapes / "raw", root, seed).items():
        recipes_cli.run(argv + ["--out", str(shards / name), "--quiet", "--strict"])
    class_names = [line.split(" ", 1)[1].strip() for line in (root / "synset_words.txt").read_text().splitlines()]
    (shards / "imagenet" / "class_names.txt").write_text("\n".join(class_names) + "\n")
    return shards


@pytest.fixture(scope="module")
def preset_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return root, build_preset_shards(root)


def dev_overrides(preset: str, shards: Path, root: Path) -> list[str]:
    """The command-line overrides that shrink ``preset`` to a CPU dev run on the shapes-derived shards."""
    cfg = compose_config([f"experiment={preset}"], root / "probe", root)
    out = [f"experiment={preset}", *TINY, f"data.shards_root={shards}"]
    if any(src is not None and src.task == "glue" for src in cfg.mixture.values()):
        # GLUE predicts one label token: OFA's BPE (single-token yes/no/...), not the tiny trained one
        bpe = Path(os.environ.get("OFA_BPE_DIR", ""))
        if not (bpe / "encoder.json").is_file():
            pytest.skip(f"{preset} needs OFA's BPE files, not found in {bpe} (set OFA_BPE_DIR)")
        out = [o for o in out if not o.startswith("tokenizer")] + ["tokenizer=ofa_bpe"]
    if cfg.data.get("text_image_size"):
        out.append("data.text_image_size=64")
    if cfg.data.task_options.get("image_size"):
        out.append("data.task_options.image_size=64")
    for name, src in cfg.mixture.items():
        if src is None:
            continue
        task = src.task
        data = TASK_SHARDS.get(task) or (f"glue_{src.options.subtask}" if task == "glue" else None)
        out.append(f"mixture.{name}.shards={data}")
        val, test = EVAL_SPLITS.get(data if data in EVAL_SPLITS else task, ("val", "test"))
        if src.get("eval_split", "unset") is not None or val is None:
            out.append(f"++mixture.{name}.eval_split={val if val else 'null'}")
        if src.get("test_split", "unset") is not None or test is None:
            out.append(f"++mixture.{name}.test_split={test if test else 'null'}")
        opts = src.get("options") or {}
        if task not in TEXT_ONLY and task != "image_infilling":
            if "image_size" in opts or not cfg.data.task_options.get("image_size"):
                out.append(f"++mixture.{name}.options.image_size=64")
        if opts.get("sample_patch_num"):
            out.append(f"mixture.{name}.options.sample_patch_num=8")
        if task in ("image_infilling", "text_to_image"):
            out += [f"++mixture.{name}.options.code_image_size=32", "model.code_image_size=32"]
        if task == "image_infilling":
            out.append(f"++mixture.{name}.options.image_size=64")
        if task == "text_to_image":  # 2 samples instead of 24 in the (tiny) evaluation
            out.append(f"++mixture.{name}.options.generation={{preset: text_to_image, beam_size: 2, sampling_topk: 8}}")
    if cfg.module.get("scst"):
        out += ["module.scst.beam_size=2", "module.scst.max_len_b=6"]
    return out


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_names_its_recipe(preset, tmp_path):
    cfg = compose_config([f"experiment={preset}"], tmp_path, tmp_path)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.task_name == preset
    if is_ofa_recipe(preset):
        assert cfg.recipe.paper and cfg.recipe.data and cfg.recipe.name, "each preset names its data recipe and paper"
        assert cfg.trainer.max_steps > 0 and cfg.module.optim.lr > 0


def test_every_family_covers_every_size():
    for family, _n in FAMILY_SIZES.items():
        sizes = {p.rsplit("_", 1)[1] for p in PRESETS if p.rsplit("_", 1)[0] == family}
        assert sizes >= {"tiny", "medium", "base", "large", "huge"}, (family, sizes)
    assert set(ROOTS) <= set(PRESETS)


def test_ofa_hyperparameters_are_the_references(tmp_path):
    """Spot checks against OFA's run_scripts (effective batch = micro x devices x accumulate)."""

    def c(name):
        return compose_config([f"experiment={name}"], tmp_path, tmp_path)

    def batch(cfg):
        return cfg.data.micro_batch_size * cfg.trainer.devices * cfg.trainer.accumulate_grad_batches

    s1, s2, vqa, ref, snli = (
        c("caption_stage1_large"),
        c("caption_stage2_large"),
        c("vqa_large"),
        c("refcoco_large"),
        c("snli_ve_large"),
    )
    assert (s1.module.optim.lr, batch(s1), s1.module.loss.drop_worst_ratio, s1.module.loss.drop_worst_after) == (
        1e-5,
        128,
        0.2,
        2500,
    )
    assert s1.module.optim.freeze_embeddings and s1.data.task_options.image_size == 480
    assert (batch(s2), s2.module.optim.end_lr, s2.model.dropout, s2.module.scst.beam_size) == (64, 2e-7, 0.0, 5)
    assert (vqa.module.optim.lr, batch(vqa), vqa.trainer.max_steps, vqa.module.ema.decay) == (5e-5, 512, 40000, 0.9999)
    assert vqa.mixture.vqa.options.constrained_training and vqa.mixture.vqa.options.inference == "candidates"
    assert c("vqa_large_beam").mixture.vqa.options.inference == "generate"
    assert (ref.module.optim.lr, batch(ref), ref.data.task_options.image_size, ref.model.encoder_drop_path_rate) == (
        3e-5,
        128,
        512,
        0.2,
    )
    assert c("refcoco_base").module.optim.lr == 5e-5 and c("refcoco_base").model.size == "base"
    assert (snli.module.optim.lr, batch(snli), snli.module.loss.label_smoothing) == (2e-5, 256, 0.0)
    huge = c("caption_stage1_huge")
    assert huge.model.size == "huge" and huge.model.interpolate_position
    assert huge.mixture.caption.options.generation.preset == "caption_huge"
    pre = c("pretrain_large")
    assert pre.data.group_batches and pre.module.loss.label_smoothing == 0.0 and pre.trainer.gradient_clip_val == 5.0
    ratios = {k: v.ratio for k, v in pre.mixture.items()}
    assert sum(ratios.values()) == pytest.approx(1.0, abs=1e-3)
    assert ratios["text_infilling"] == pytest.approx(0.1) and ratios["detection"] == ratios["image_infilling"] == 0.05
    assert all(pre.mixture[k].options.sample_patch_num == 196 for k in ("caption", "vqa", "grounding"))


@pytest.mark.parametrize("preset", ROOTS)
def test_preset_fast_dev_run(preset, preset_data, one_thread):
    root, shards = preset_data
    run_dir = root / "runs" / preset
    cfg = compose_config(dev_overrides(preset, shards, root), run_dir, root)
    metrics = train(cfg)
    assert metrics["train/loss"] == metrics["train/loss"]  # finite, not NaN
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "final_metrics.json").is_file()
    saved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert saved.task_name == preset and saved.trainer.max_steps == 3


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ROOTS and is_ofa_recipe(p)])
def test_size_variant_fast_dev_run(preset, preset_data, one_thread):
    test_preset_fast_dev_run(preset, preset_data, one_thread)
