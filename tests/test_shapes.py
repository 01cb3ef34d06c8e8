"""The shapes generator: deterministic, split by image, official raw formats, boxes that match the pixels."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from data_recipes.common.vqa_answers import soft_scores
from data_recipes.shapes import SPLITS, generate_shapes, split_ids
from data_recipes.shapes_pipeline import build_shapes_shards

NUM_IMAGES = 40


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "raw"
    generate_shapes(out, num_images=NUM_IMAGES, seed=7, image_size=128)
    return out


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_same_seed_same_bytes_other_seed_other_images(raw, tmp_path):
    again = tmp_path / "again"
    generate_shapes(again, num_images=NUM_IMAGES, seed=7, image_size=128)
    first, second = _tree_digest(raw), _tree_digest(again)
    assert first == second and len(first) > NUM_IMAGES
    other = tmp_path / "other"
    generate_shapes(other, num_images=NUM_IMAGES, seed=8, image_size=128)
    images = [k for k in first if k.startswith("images/")]
    changed = sum(first[k] != _tree_digest(other).get(k) for k in images)
    assert changed > NUM_IMAGES // 2


def test_splits_are_disjoint_by_image_in_every_format(raw):
    assignment = split_ids(NUM_IMAGES, 7)
    counts = Counter(assignment.values())
    assert counts == {"train": 32, "val": 4, "test": 4}
    karpathy = {e["cocoid"]: e["split"] for e in _json(raw / "dataset_coco.json")["images"]}
    assert karpathy == assignment
    for split in SPLITS:
        folder = {int(p.stem.rsplit("_", 1)[1]) for p in (raw / "images" / split).iterdir()}
        assert folder == {i for i, s in assignment.items() if s == split}
        questions = _json(raw / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]
        assert {q["image_id"] for q in questions} <= folder
        detection = _json(raw / "detection" / f"instances_{split}.json")
        assert {i["id"] for i in detection["images"]} == folder
    refs = pickle.loads((raw / "refcoco" / "refs(unc).p").read_bytes())
    assert all(assignment[r["image_id"]] == r["split"] for r in refs)
    snli_names = {"train": "train", "val": "dev", "test": "test"}
    for split, name in snli_names.items():
        lines = (raw / "snli_ve" / f"snli_ve_{name}.jsonl").read_text().splitlines()
        assert {assignment[int(json.loads(l)["Flikr30kID"][-16:-4])] for l in lines} == {split}


def test_captions_have_at_least_three_distinct_refs(raw):
    images = _json(raw / "dataset_coco.json")["images"]
    assert len(images) == NUM_IMAGES
    for entry in images:
        raws = [s["raw"] for s in entry["sentences"]]
        assert len(set(raws)) >= 3 and all(r.strip() for r in raws)
        assert (raw / "images" / entry["filepath"] / entry["filename"]).is_file()


def test_vqa_has_ten_mostly_agreeing_answers(raw):
    total = 0
    for split in SPLITS:
        questions = _json(raw / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]
        annotations = {
            a["question_id"]: a for a in _json(raw / "vqa" / f"v2_mscoco_{split}_annotations.json")["annotations"]
        }
        assert {q["question_id"] for q in questions} == set(annotations)
        for ann in annotations.values():
            answers = [a["answer"] for a in ann["answers"]]
            assert len(answers) == 10
            best, count = Counter(answers).most_common(1)[0]
            assert best == ann["multiple_choice_answer"] and count >= 8
            assert soft_scores(answers)[best] == 1.0
            assert ann["answer_type"] in {"yes/no", "number", "other"}
        total += len(questions)
    types = {
        a["answer_type"] for s in SPLITS for a in _json(raw / "vqa" / f"v2_mscoco_{s}_annotations.json")["annotations"]
    }
    assert types == {"yes/no", "number", "other"} and total >= 2 * NUM_IMAGES


def test_boxes_lie_inside_images_and_match_the_drawn_shape(raw):
    scenes = _json(raw / "scenes.json")
    instances = _json(raw / "refcoco" / "instances.json")
    by_ann = {a["id"]: a for a in instances["annotations"]}
    checked = 0
    for scene in scenes:
        image = Image.open(raw / "images" / scene["split"] / scene["file_name"]).convert("RGB")
        assert image.size == (scene["width"], scene["height"])
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= scene["width"] and 0 <= y0 < y1 <= scene["height"]
            assert by_ann[obj["ann_id"]]["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            centre = image.getpixel((int((x0 + x1) / 2), int((y0 + y1) / 2)))
            assert max(abs(a - b) for a, b in zip(centre, obj["rgb"])) <= 40, (scene["file_name"], obj)
            # the box is tight: a few pixels outside it (beyond JPEG's chroma blur) the shape's colour is gone
            cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
            for px, py in ((x0 - 3, cy), (x1 + 2, cy), (cx, y0 - 3), (cx, y1 + 2)):
                if 0 <= px < scene["width"] and 0 <= py < scene["height"]:
                    assert max(abs(a - b) for a, b in zip(image.getpixel((px, py)), obj["rgb"])) > 40
            checked += 1
    assert checked >= NUM_IMAGES


def test_referring_expressions_are_unambiguous(raw):
    scenes = {s["image_id"]: s for s in _json(raw / "scenes.json")}
    refs = pickle.loads((raw / "refcoco" / "refs(unc).p").read_bytes())
    assert refs and all(r["sentences"] for r in refs)
    for ref in refs:
        objects = scenes[ref["image_id"]]["objects"]
        target = next(o for o in objects if o["ann_id"] == ref["ann_id"])
        for sentence in ref["sentences"]:
            words = sentence["sent"].split()
            if len(words) == 3 and words[1] in {o["color"] for o in objects} and words[2] != "shape":
                assert sum(o["color"] == words[1] and o["shape"] == words[2] for o in objects) == 1
                assert (target["color"], target["shape"]) == (words[1], words[2])
            if sentence["sent"] in ("the shape on the left", "the leftmost shape"):
                assert target["box"][0] + target["box"][2] == min(o["box"][0] + o["box"][2] for o in objects)


def test_build_shapes_shards_runs_every_recipe_with_matching_counts(tmp_path):
    manifests = build_shapes_shards(tmp_path, num_images=30, seed=1, shard_size=50)
    raw = tmp_path / "raw"
    assignment = split_ids(30, 1)
    for name in ("coco_caption", "vqav2", "refcoco", "snli_ve", "detection", "text_corpus"):
        assert (tmp_path / "shards" / name / "manifest.json").is_file()
        assert manifests[name]["complete"]
        assert all(s["num_skipped"] == 0 for s in manifests[name]["splits"].values())
    images = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    assert {s: m["num_samples"] for s, m in manifests["coco_caption"]["splits"].items()} == images
    assert {s: m["num_samples"] for s, m in manifests["detection"]["splits"].items()} == images
    questions = {s: len(_json(raw / "vqa" / f"v2_OpenEnded_mscoco_{s}_questions.json")["questions"]) for s in SPLITS}
    assert {s: m["num_samples"] for s, m in manifests["vqav2"]["splits"].items()} == questions
    refs = pickle.loads((raw / "refcoco" / "refs(unc).p").read_bytes())
    sentences = Counter()
    for ref in refs:
        sentences[ref["split"]] += len(ref["sentences"])
    assert {s: m["num_samples"] for s, m in manifests["refcoco"]["splits"].items()} == dict(sentences)
    assert manifests["snli_ve"]["splits"]["dev"]["num_samples"] == 3 * images["val"]
    lines = [l for l in (raw / "corpus.txt").read_text().splitlines() if l.strip()]
    assert manifests["text_corpus"]["splits"]["train"]["num_samples"] == len(lines)

    scenes = {s["image_id"]: s for s in _json(raw / "scenes.json")}
    urls = sorted(str(p) for p in (tmp_path / "shards" / "refcoco").glob("train-*.tar"))
    for sample in wds.WebDataset(urls, shardshuffle=False):
        fields = json.loads(sample["json"])
        target = next(o for o in scenes[fields["image_id"]]["objects"] if o["ann_id"] == fields["ann_id"])
        assert fields["box"] == [float(v) for v in target["box"]]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (128, 128)
    # detection labels name colour and shape (--label-attributes color), in annotation order
    urls = sorted(str(p) for p in (tmp_path / "shards" / "detection").glob("*.tar"))
    for sample in wds.WebDataset(urls, shardshuffle=False):
        fields = json.loads(sample["json"])
        objects = scenes[fields["image_id"]]["objects"]
        assert fields["labels"] == [f"{o['color']} {o['shape']}" for o in objects]
        assert fields["boxes"] == [[float(v) for v in o["box"]] for o in objects]

    again = build_shapes_shards(tmp_path / "again", num_images=30, seed=1, shard_size=50)
    for name, manifest in manifests.items():
        shas = [sh["sha256"] for s in manifest["splits"].values() for sh in s["shards"]]
        assert shas == [sh["sha256"] for s in again[name]["splits"].values() for sh in s["shards"]]

    # a second build over the same root with another seed must reflect the rewritten raw files
    build_shapes_shards(tmp_path, num_images=30, seed=2, shard_size=50, overwrite=True)
    refs = {e["cocoid"]: [x["raw"] for x in e["sentences"]] for e in _json(raw / "dataset_coco.json")["images"]}
    urls = sorted(str(p) for p in (tmp_path / "shards" / "coco_caption").glob("*.tar"))
    samples = [json.loads(s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert len(samples) == 30 and all(s["captions"] == refs[s["image_id"]] for s in samples)


def test_counts_and_shape_scale_shape_the_scenes(tmp_path):
    summary = generate_shapes(
        tmp_path / "one", num_images=30, seed=3, image_size=64, counts=(1,), shape_scale=(0.3, 0.6)
    )
    scenes = _json(tmp_path / "one" / "scenes.json")
    assert len(scenes) == 30 and all(len(s["objects"]) == 1 for s in scenes)
    sides = [max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) for s in scenes for o in s["objects"]]
    assert min(sides) >= 0.3 * 64 - 2 and max(sides) <= 0.6 * 64 and max(sides) > 0.34 * 64  # beyond the default
    assert summary["images"] == {"train": 24, "val": 3, "test": 3}
    recorded = _json(tmp_path / "one" / "shapes_summary.json")
    assert recorded["counts"] == [1] and recorded["shape_scale"] == [0.3, 0.6]
    with pytest.raises(ValueError, match="counts"):
        generate_shapes(tmp_path / "bad", num_images=3, counts=(0, 5))
    with pytest.raises(ValueError, match="shape_scale"):
        generate_shapes(tmp_path / "bad", num_images=3, shape_scale=(0.5, 0.2))
