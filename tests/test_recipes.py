"""Every recipe on tiny raw data: counts, fields read back with webdataset, manifest, skips, atomicity, safety."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from data_recipes import cli
from data_recipes.common import PrepareError, make_key
from data_recipes.common.safe_pickle import UnsafePickleError, safe_loads
from data_recipes.common.vqa_answers import normalize_answer, parse_ofa_refs, soft_scores
from data_recipes.registry import RECIPE_MODULES
from data_recipes.shapes import SPLITS, generate_shapes

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- helpers


def prepare(*argv):
    return cli.run([str(a) for a in argv] + ["--quiet"])


def read_split(out: Path, split: str) -> list[dict]:
    """All samples of a split through webdataset: {"key", "json" (parsed), other members as bytes}."""
    urls = sorted(str(p) for p in Path(out).glob(f"{split}-*.tar"))
    samples = []
    for raw in wds.WebDataset(urls, shardshuffle=False):
        sample = {k: v for k, v in raw.items() if not k.startswith("__")}
        sample["key"] = raw["__key__"]
        sample["json"] = json.loads(sample["json"])
        samples.append(sample)
    return samples


def image_bytes(fmt: str = "JPEG", colour=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def counts(manifest: dict) -> dict[str, int]:
    return {split: state["num_samples"] for split, state in manifest["splits"].items()}


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes_raw")
    generate_shapes(out, num_images=30, seed=5, image_size=96)
    return out


def split_roots(raw: Path) -> list[str]:
    return [str(raw / "images" / s) for s in SPLITS]


def karpathy_images(raw: Path) -> list[dict]:
    return json.loads((raw / "dataset_coco.json").read_text())["images"]


# ------------------------------------------------------------------------------------------- CLI


def test_cli_lists_every_recipe_and_documents_inputs(capsys):
    assert cli.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in (
        "shapes",
        "coco_caption",
        "vqav2",
        "refcoco",
        "snli_ve",
        "detection",
        "imagenet",
        "glue",
        "gigaword",
        "text_corpus",
        "vq_codes",
        "ofa_tsv",
    ):
        assert name in listing
    assert len(listing.strip().splitlines()) == len(RECIPE_MODULES)
    for name, flag in (
        ("coco_caption", "--karpathy-json"),
        ("refcoco", "--refer-dir"),
        ("shapes", "--num-images"),
        ("ofa_tsv", "--kind"),
        ("glue", "--layout"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert flag in text and (name == "shapes" or "--shard-size" in text)
    result = subprocess.run(
        [sys.executable, "-m", "data_recipes", "--list"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "vqav2" in result.stdout


def test_make_key_is_webdataset_safe():
    key = make_key("refcoco+", "3416050480.jpg#4r1n", 7)
    assert key == "refcocoplus-3416050480_jpg_4r1n-7"
    assert "." not in key and "/" not in key


# ------------------------------------------------------------------------------------------- recipes on shapes


def test_coco_caption_keeps_original_bytes_and_all_refs(raw, tmp_path):
    out = tmp_path / "cap"
    manifest = prepare(
        "coco_caption",
        "--karpathy-json",
        raw / "dataset_coco.json",
        "--images",
        raw / "images",
        "--out",
        out,
        "--shard-size",
        10,
    )
    entries = karpathy_images(raw)
    assert counts(manifest) == dict(Counter(e["split"] for e in entries))
    by_id = {e["cocoid"]: e for e in entries}
    samples = read_split(out, "train")
    assert len(samples) == manifest["splits"]["train"]["num_samples"]
    assert len(manifest["splits"]["train"]["shards"]) == 3
    for sample in samples:
        entry = by_id[sample["json"]["image_id"]]
        assert sample["key"] == sample["json"]["id"] == f"coco_cap-{entry['cocoid']}"
        assert sample["json"]["captions"] == [s["raw"] for s in entry["sentences"]]
        assert sample["json"]["source"] == "coco_caption" and sample["json"]["split"] == "train"
        assert sample["jpg"] == (raw / "images" / entry["filepath"] / entry["filename"]).read_bytes()
        assert (sample["json"]["width"], sample["json"]["height"]) == (96, 96)


def test_vqav2_soft_scores_refs_and_answer_candidates(raw, tmp_path):
    out = tmp_path / "vqa"
    manifest = prepare(
        "vqav2", "--vqa-dir", raw / "vqa", "--images", raw / "images", "--out", out, "--num-candidates", 5
    )
    assert list(manifest["splits"]) == ["train", "val", "test"]
    for split in SPLITS:
        questions = json.loads((raw / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())
        assert manifest["splits"][split]["num_samples"] == len(questions["questions"])
    for sample in read_split(out, "val"):
        fields = sample["json"]
        assert len(fields["answers"]) == 10
        assert fields["answer_conf"] == soft_scores(fields["answers"])
        assert parse_ofa_refs(fields["ofa_refs"]) == fields["answer_conf"]
        assert fields["answer_type"] in {"yes/no", "number", "other"} and fields["question"].endswith("?")
        assert sample["key"] == f"vqa-{fields['question_id']}"
    annotations = json.loads((raw / "vqa" / "v2_mscoco_train_annotations.json").read_text())["annotations"]
    ranked = Counter(normalize_answer(a["multiple_choice_answer"]) for a in annotations)
    answers = json.loads((out / "answers.json").read_text())
    assert len(answers) == 5 and answers[0] == ranked.most_common(1)[0][0]
    assert [ranked[a] for a in answers] == sorted((ranked[a] for a in answers), reverse=True)
    assert "answers.json" in manifest["extras"]


def test_vqa_soft_score_is_the_official_leave_one_out_average():
    assert soft_scores(["cat"] + ["dog"] * 9) == {"dog": 1.0, "cat": 0.3}
    assert soft_scores(["cat"] * 2 + ["dog"] * 8)["cat"] == 0.6
    assert soft_scores(["cat"] * 3 + ["dog"] * 7)["cat"] == 0.9
    assert soft_scores(["cat"] * 4 + ["dog"] * 6)["cat"] == 1.0
    assert soft_scores(["Two.", "2", "two"] + ["3"] * 7)["2"] == 0.9
    assert normalize_answer("The T-shirt") == "t shirt" and normalize_answer("1,000") == "1000"


def test_vqav2_test_split_without_annotations_has_no_answers(raw, tmp_path):
    vqa = tmp_path / "vqa_raw"
    shutil.copytree(raw / "vqa", vqa)
    (vqa / "v2_mscoco_test_annotations.json").unlink()
    manifest = prepare(
        "vqav2", "--vqa-dir", vqa, "--images", raw / "images", "--out", tmp_path / "o", "--splits", "test"
    )
    samples = read_split(tmp_path / "o", "test")
    assert len(samples) == manifest["splits"]["test"]["num_samples"] > 0
    assert all(s["json"]["answers"] == [] and s["json"]["answer_conf"] == {} for s in samples)


def test_refcoco_boxes_come_from_xywh_annotations(raw, tmp_path):
    out = tmp_path / "ref"
    manifest = prepare("refcoco", "--refer-dir", raw / "refcoco", "--images", *split_roots(raw), "--out", out)
    refs = pickle.loads((raw / "refcoco" / "refs(unc).p").read_bytes())
    per_split = Counter()
    for ref in refs:
        per_split[ref["split"]] += len(ref["sentences"])
    assert counts(manifest) == dict(per_split)
    anns = {a["id"]: a for a in json.loads((raw / "refcoco" / "instances.json").read_text())["annotations"]}
    sentences = {(r["ref_id"], s["sent_id"]): s["sent"] for r in refs for s in r["sentences"]}
    for sample in read_split(out, "train"):
        fields = sample["json"]
        x, y, w, h = anns[fields["ann_id"]]["bbox"]
        assert fields["box"] == [x, y, x + w, y + h]
        assert fields["expression"] == sentences[(fields["ref_id"], fields["sent_id"])]
        assert fields["category"] in {"circle", "square", "triangle", "diamond", "star", "hexagon"}
        assert fields["dataset"] == "refcoco" and "jpg" in sample


class _RunsShell:
    """A pickle payload that would run a shell command when loaded by plain pickle."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code_and_accepts_plain_data(tmp_path):
    marker = tmp_path / "hi.txt"
    payload = pickle.dumps(_RunsShell(f"echo hi > {marker}"))
    with pytest.raises(UnsafePickleError, match="system"):
        safe_loads(payload)
    assert not marker.exists()
    for forbidden in ({1, 2}, b"bytes", _Plain()):
        with pytest.raises(UnsafePickleError):
            safe_loads(pickle.dumps(forbidden, protocol=2))
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps([b"raw bytes"], protocol=4))
    plain = [
        {"ref_id": 1, "sentences": [{"sent": "the red circle"}], "box": (1.5, 2, 3, 4), "ok": True, "none": None},
        "text",
        -3,
        2.5,
    ]
    for protocol in (0, 2, 4, 5):
        assert safe_loads(pickle.dumps(plain, protocol=protocol)) == plain


class _Plain:
    pass


def test_refcoco_refuses_a_malicious_refs_pickle(raw, tmp_path):
    refer = tmp_path / "refcoco"
    refer.mkdir()
    shutil.copy(raw / "refcoco" / "instances.json", refer / "instances.json")
    marker = tmp_path / "ran.txt"
    (refer / "refs(unc).p").write_bytes(pickle.dumps(_RunsShell(f"echo hi > {marker}")))
    with pytest.raises(PrepareError, match=r"refs\(unc\)\.p.*refusing to load"):
        prepare("refcoco", "--refer-dir", refer, "--images", *split_roots(raw), "--out", tmp_path / "o")
    assert not marker.exists()
    assert (
        cli.main(
            [
                "refcoco",
                "--refer-dir",
                str(refer),
                "--images",
                *split_roots(raw),
                "--out",
                str(tmp_path / "o2"),
                "--quiet",
            ]
        )
        == 2
    )


def test_snli_ve_labels_and_bad_lines_are_counted_skips(raw, tmp_path):
    snli = tmp_path / "snli"
    shutil.copytree(raw / "snli_ve", snli)
    good = (snli / "snli_ve_dev.jsonl").read_text().splitlines()
    record = json.loads(good[0])
    bad_label = dict(record, gold_label="-", pairID="x#label")
    mistyped = dict(record, sentence2=5, pairID="x#type")
    too_long = dict(record, sentence2="very " * 1000, pairID="x#long")
    missing = {k: v for k, v in record.items() if k != "sentence1"} | {"pairID": "x#missing"}
    with open(snli / "snli_ve_dev.jsonl", "ab") as handle:
        handle.write(b'{"Flikr30kID": "a.jpg", "sentence1": "caf\xe9", "pairID": "x#latin1"}\n')
        handle.write(b'{"not json\n')
        for bad in (bad_label, mistyped, too_long, missing):
            handle.write((json.dumps(bad) + "\n").encode())
    manifest = prepare("snli_ve", "--jsonl-dir", snli, "--images", *split_roots(raw), "--out", tmp_path / "o")
    dev = manifest["splits"]["dev"]
    assert dev["num_samples"] == len(good) and dev["num_skipped"] == 6
    assert dev["skip_reasons"] == {
        "bad json": 1,
        "bad label": 1,
        "bad type": 1,
        "missing field": 1,
        "non-UTF-8 text": 1,
        "text too long": 1,
    }
    assert {s["id"] for s in dev["skipped"]} >= {"snli_ve-x_type", "snli_ve-x_long", "snli_ve-x_missing"}
    samples = read_split(tmp_path / "o", "dev")
    assert Counter(s["json"]["label"] for s in samples) == Counter(
        {"entailment": len(good) // 3, "neutral": len(good) // 3, "contradiction": len(good) // 3}
    )
    assert all(s["json"]["premise"] and s["json"]["hypothesis"] for s in samples)


def test_detection_clips_drops_bad_boxes_and_skips_empty_images(raw, tmp_path):
    det = tmp_path / "det"
    shutil.copytree(raw / "detection", det)
    data = json.loads((det / "instances_val.json").read_text())
    kept, emptied, clipped = (image["id"] for image in data["images"][:3])
    data["annotations"].append(
        {"id": 10_000, "image_id": kept, "category_id": 1, "bbox": [10, 10, -5, 8], "iscrowd": 0}
    )  # inverted: dropped, image kept
    data["annotations"].append(
        {"id": 10_001, "image_id": kept, "category_id": 1, "bbox": [200, 200, 5, 5], "iscrowd": 0}
    )  # outside the image: dropped
    data["annotations"].append(
        {"id": 10_002, "image_id": kept, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1}
    )  # crowd: left out
    for ann in data["annotations"]:
        if ann["image_id"] == emptied:
            ann["bbox"] = [10, 10, 0, 8]  # empty: every box dropped -> skipped
    first_of_clipped = next(a for a in data["annotations"] if a["image_id"] == clipped)
    first_of_clipped["bbox"] = [-6, 5, 20, 10]  # partly outside: clipped to x0 = 0
    write_json(det / "instances_val.json", data)
    manifest = prepare(
        "detection",
        "--ann-dir",
        det,
        "--images",
        *split_roots(raw),
        "--dataset-name",
        "shapes",
        "--out",
        tmp_path / "o",
        "--splits",
        "val",
    )
    val = manifest["splits"]["val"]
    assert val["num_skipped"] == 1 and val["skip_reasons"] == {"no boxes": 1}
    assert val["skipped"][0]["id"] == f"shapes-{emptied}"
    assert val["num_samples"] == len(data["images"]) - 1
    assert val["warnings"] == {"box dropped: bad box": 2}
    samples = {s["json"]["image_id"]: s["json"] for s in read_split(tmp_path / "o", "val")}
    assert samples[clipped]["boxes"][0] == [0.0, 5.0, 14.0, 15.0]
    assert len(samples[kept]["boxes"]) == sum(a["image_id"] == kept for a in data["annotations"]) - 3
    for fields in samples.values():
        assert len(fields["boxes"]) == len(fields["labels"]) == len(fields["category_ids"])
        assert all(0 <= b[0] < b[2] <= 96 and 0 <= b[1] < b[3] <= 96 for b in fields["boxes"])


def test_detection_label_attributes_prefix_the_category_and_missing_ones_drop_the_box(raw, tmp_path):
    det = tmp_path / "det"
    shutil.copytree(raw / "detection", det)
    data = json.loads((det / "instances_val.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    first = data["images"][0]["id"]
    lost = next(a for a in data["annotations"] if a["image_id"] == first)
    del lost["color"]  # no colour: this box is dropped
    write_json(det / "instances_val.json", data)
    manifest = prepare(
        "detection",
        "--ann-dir",
        det,
        "--images",
        *split_roots(raw),
        "--dataset-name",
        "shapes",
        "--label-attributes",
        "color",
        "--out",
        tmp_path / "o",
        "--splits",
        "val",
    )
    assert manifest["splits"]["val"]["warnings"] == {"box dropped: missing field": 1}
    by_image = {}
    for ann in data["annotations"]:
        if "color" in ann:
            by_image.setdefault(ann["image_id"], []).append(f"{ann['color']} {names[ann['category_id']]}")
    samples = {s["json"]["image_id"]: s["json"] for s in read_split(tmp_path / "o", "val")}
    assert {i: s["labels"] for i, s in samples.items()} == by_image  # e.g. "red diamond", annotation order
    assert any(" " in label for labels in by_image.values() for label in labels)


# ------------------------------------------------------------------------------------------- hand-made sources


def test_imagenet_class_folders_and_synset_words(tmp_path):
    root = tmp_path / "imagenet"
    (tmp_path / "synset_words.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn04118538 rugby ball\n"
    )
    files = {
        "train/n01440764/n01440764_1.JPEG": image_bytes(),
        "train/n01440764/n01440764_2.png": image_bytes("PNG"),
        "train/n04118538/n04118538_9.JPEG": image_bytes(colour=(1, 2, 3)),
        "val/n01443537/ILSVRC2012_val_00000001.JPEG": image_bytes(),
        "val/n01443537/ILSVRC2012_val_00000002.JPEG": b"\xff\xd8\xff\xe0 not really a jpeg",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    out = tmp_path / "o"
    manifest = prepare("imagenet", "--root", root, "--synsets", tmp_path / "synset_words.txt", "--out", out)
    assert counts(manifest) == {"train": 3, "val": 1}
    assert manifest["splits"]["val"]["skip_reasons"] == {"corrupt image": 1}
    train = {s["key"]: s for s in read_split(out, "train")}
    tench = train["imagenet-n01440764_2"]
    assert tench["png"] == files["train/n01440764/n01440764_2.png"] and "jpg" not in tench
    assert tench["json"]["label"] == 0 and tench["json"]["class_name"] == "tench"
    assert tench["json"]["synset_words"] == "tench, Tinca tinca"
    ball = train["imagenet-n04118538_9"]["json"]
    assert (ball["label"], ball["class_name"], ball["wnid"]) == (2, "rugby ball", "n04118538")


def test_glue_official_and_ofa_layouts(tmp_path):
    sst2 = tmp_path / "SST-2"
    sst2.mkdir()
    (sst2 / "train.tsv").write_text("sentence\tlabel\na fine film \t1\ndull\t0\n\t1\n")
    (sst2 / "test.tsv").write_text("index\tsentence\n0\tnot bad\n")
    manifest = prepare("glue", "--task", "sst2", "--data-dir", sst2, "--out", tmp_path / "sst2")
    assert counts(manifest) == {"train": 2, "test": 1}
    assert manifest["splits"]["train"]["skip_reasons"] == {"empty text": 1}
    train = [s["json"] for s in read_split(tmp_path / "sst2", "train")]
    assert [(t["sentence1"], t["label"], t["raw_label"]) for t in train] == [
        ("a fine film", "positive", "1"),
        ("dull", "negative", "0"),
    ]
    assert "sentence2" not in train[0] and train[0]["task"] == "sst2"
    assert read_split(tmp_path / "sst2", "test")[0]["json"]["label"] is None

    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we eat.\n")
    prepare("glue", "--task", "cola", "--tsv", f"train={cola}", "--out", tmp_path / "cola")
    assert [s["json"]["label"] for s in read_split(tmp_path / "cola", "train")] == ["acceptable", "unacceptable"]

    qnli = tmp_path / "qnli.tsv"
    qnli.write_text("index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n")
    prepare("glue", "--task", "qnli", "--tsv", f"dev={qnli}", "--out", tmp_path / "qnli")
    fields = read_split(tmp_path / "qnli", "dev")[0]["json"]
    assert (fields["sentence1"], fields["sentence2"], fields["label"]) == ("Who?", "He did.", "entailment")

    mnli = tmp_path / "mnli_ofa.tsv"
    mnli.write_text("a man sleeps\ta person rests\t1\tx\nit rains\tit is sunny\t2\nhe runs\the is fast\t0\n")
    prepare("glue", "--task", "mnli", "--layout", "ofa", "--tsv", f"train={mnli}", "--out", tmp_path / "mnli")
    assert [s["json"]["label"] for s in read_split(tmp_path / "mnli", "train")] == [
        "entailment",
        "contradiction",
        "neutral",
    ]


def test_gigaword_pairs_skips_and_file_errors(tmp_path):
    data = tmp_path / "giga"
    data.mkdir()
    (data / "train.src").write_bytes(b"australia 's current account deficit shrunk\nbad \xff byte\nsecond article\n")
    (data / "train.tgt").write_bytes(b"deficit narrows\nsummary\nsecond <unk> title\n")
    manifest = prepare("gigaword", "--data-dir", data, "--out", tmp_path / "o")
    assert counts(manifest) == {"train": 2}
    skipped = manifest["splits"]["train"]["skipped"]
    assert len(skipped) == 1 and skipped[0]["reason"].startswith("non-UTF-8 text")
    assert skipped[0]["id"] == "gigaword-train-2" and skipped[0]["origin"].endswith("train.src:2")
    pairs = [(s["json"]["article"], s["json"]["summary"]) for s in read_split(tmp_path / "o", "train")]
    assert pairs[1] == ("second article", "second <unk> title")
    (data / "test.src").write_text("one\ntwo\n")
    (data / "test.tgt").write_text("one\n")
    with pytest.raises(PrepareError, match="different numbers of lines"):
        prepare("gigaword", "--data-dir", data, "--out", tmp_path / "o2", "--splits", "test")
    (data / "valid.src").write_text("x\n")
    with pytest.raises(PrepareError, match=r"expected at .*valid\.tgt"):
        prepare("gigaword", "--data-dir", data, "--out", tmp_path / "o3")


def test_text_corpus_lines_and_paragraphs(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"first line.\nsecond line.\n\n\nthird \xfe line.\nfourth line.\n\nfifth.\n")
    manifest = prepare("text_corpus", "--input", corpus, "--out", tmp_path / "lines")
    assert counts(manifest) == {"train": 4} and manifest["splits"]["train"]["skip_reasons"] == {"non-UTF-8 text": 1}
    assert [s["json"]["text"] for s in read_split(tmp_path / "lines", "train")] == [
        "first line.",
        "second line.",
        "fourth line.",
        "fifth.",
    ]
    manifest = prepare("text_corpus", "--input", f"val={corpus}", "--unit", "paragraph", "--out", tmp_path / "para")
    assert counts(manifest) == {"val": 2}
    texts = [s["json"]["text"] for s in read_split(tmp_path / "para", "val")]
    assert texts == ["first line. second line.", "fifth."]


def test_vq_codes_jsonl_tsv_and_images(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(image_bytes())
    jsonl = tmp_path / "codes.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a", "codes": list(range(16)), "caption": "a red square"},
                {"id": "b", "codes": [1, 2, 3]},  # not a square grid
                {"id": "c", "codes": [9000] * 16},  # outside the codebook
            ]
        )
        + "\n"
    )
    manifest = prepare("vq_codes", "--codes", jsonl, "--out", tmp_path / "o", "--splits", "train")
    assert counts(manifest) == {"train": 1} and manifest["splits"]["train"]["num_skipped"] == 2
    fields = read_split(tmp_path / "o", "train")[0]["json"]
    assert fields["codes"] == list(range(16)) and fields["code_grid"] == 4 and fields["caption"] == "a red square"
    tsv = tmp_path / "gen.tsv"
    tsv.write_text("a\t" + " ".join(["7"] * 16) + "\tmore text\n")
    prepare("vq_codes", "--codes", f"val={tsv}", "--images", images, "--code-lengths", "16", "--out", tmp_path / "t")
    sample = read_split(tmp_path / "t", "val")[0]
    assert sample["json"]["codes"] == [7] * 16 and sample["jpg"] == (images / "a.jpg").read_bytes()


def _b64(data: bytes, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


def test_ofa_tsv_kinds_decode_base64_to_the_original_bytes(tmp_path):
    jpg, png = image_bytes(size=(50, 40)), image_bytes("PNG", size=(50, 40))
    rows = {
        "caption": [f"1\t101\ta red square&&a square that is red\tobj\t{_b64(jpg)}", "2\t102\tx\tobj\t!!notbase64!!"],
        "vqa": [f"7\t101\twhat color?\t1.0|!+red&&0.3|!+pink\tsquare&&box\t{_b64(jpg, urlsafe=True)}"],
        "refcoco": [f"3\t101\tthe square\t5,5,60,30\t{_b64(png)}"],
        "snli_ve": [f"4\t101\t{_b64(jpg)}\ta square\ta red square\tentailment"],
        "detection": [f"5\t{_b64(jpg)}\t1,2,20,30,7,square&&9,9,3,3,1,bad&&0,0,10,10,8,red, square"],
        "imagenet": [f"{_b64(jpg)}\t1\ttench, Tinca tinca"],
        "image_gen": ["6\t" + " ".join(["5"] * 1024) + "\ta red square"],
        "pretrain_vl": [
            f"8\t{_b64(jpg)}\ta red square\t\t\tsquare\tcoco\tcaption",
            f"9\t{_b64(jpg)}\t\twhat color?\t1.0|!+red\t\tvqa\tqa",
            f"10\t{_b64(jpg)}\tthe square\t\t1,1,9,9\t\trefcoco\tvisual_grounding",
        ],
        "gigaword": ["an article\ta summary"],
        "pretrain_text": ["11\tsome text about shapes"],
    }
    fields = {}
    for kind, lines in rows.items():
        path = tmp_path / f"{kind}.tsv"
        path.write_text("\n".join(lines) + "\n")
        out = tmp_path / kind
        manifest = prepare("ofa_tsv", "--kind", kind, "--tsv", f"val={path}", "--out", out)
        fields[kind] = read_split(out, "val")
        assert all(s["json"]["kind"] == kind and s["json"]["source"] == "ofa_tsv" for s in fields[kind])
        if kind == "caption":
            assert manifest["splits"]["val"]["skip_reasons"] == {"bad base64": 1}
    caption = fields["caption"][0]
    assert caption["jpg"] == jpg and caption["json"]["captions"] == ["a red square", "a square that is red"]
    vqa = fields["vqa"][0]["json"]
    assert fields["vqa"][0]["jpg"] == jpg and vqa["answer_conf"] == {"red": 1.0, "pink": 0.3}
    assert vqa["multiple_choice_answer"] == "red" and vqa["ofa_refs"] == "1.0|!+red&&0.3|!+pink"
    ref = fields["refcoco"][0]
    assert ref["png"] == png and ref["json"]["box"] == [5.0, 5.0, 50.0, 30.0]  # clipped to the 50 px width
    assert fields["snli_ve"][0]["json"]["label"] == "entailment"
    det = fields["detection"][0]["json"]
    assert det["labels"] == ["square", "red, square"] and det["category_ids"] == [7, 8]
    assert fields["imagenet"][0]["json"]["label"] == 0 and fields["imagenet"][0]["json"]["class_name"] == "tench"
    assert fields["image_gen"][0]["json"]["code_grid"] == 32 and "jpg" not in fields["image_gen"][0]
    vl = {s["json"]["task"]: s["json"] for s in fields["pretrain_vl"]}
    assert vl["caption"]["captions"] == ["a red square"] and vl["qa"]["answer_conf"] == {"red": 1.0}
    assert vl["visual_grounding"]["box"] == [1.0, 1.0, 9.0, 9.0]
    assert fields["gigaword"][0]["json"]["summary"] == "a summary"
    assert fields["pretrain_text"][0]["json"]["text"] == "some text about shapes"

    glue_tsv = tmp_path / "rte.tsv"
    glue_tsv.write_text("0\tA man sleeps.\tA person rests.\tentailment\n")
    prepare("ofa_tsv", "--kind", "glue", "--glue-task", "rte", "--tsv", glue_tsv, "--out", tmp_path / "rte")
    rte = read_split(tmp_path / "rte", "train")[0]["json"]
    assert (rte["sentence1"], rte["label"], rte["kind"]) == ("A man sleeps.", "entailment", "glue")


# ------------------------------------------------------------------------------------------- manifest, skips, strict


def _bad_karpathy(tmp_path: Path) -> tuple[Path, Path]:
    """Six images: 3 good train (one has a blank caption), 1 restval, 1 all-blank val, 1 corrupt test, 1 unsafe path."""
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for i, split in enumerate(["train", "train", "train", "restval", "val", "test", "val"], start=1):
        name = f"img{i}.jpg"
        data = image_bytes(colour=(i * 30, 0, 0))
        if split == "test":
            data = data[: len(data) // 2]  # truncated JPEG
        (images / name).write_bytes(data)
        sentences = [{"raw": f"picture number {i}"}, {"raw": "another caption"}, {"raw": "a third"}]
        if i == 2:
            sentences.append({"raw": "   "})
        if split == "val" and i == 5:
            sentences = [{"raw": ""}, {"raw": " "}]
        entries.append(
            {
                "filepath": "",
                "filename": name if i != 7 else "../../etc/passwd",
                "cocoid": i,
                "imgid": i,
                "split": split,
                "sentences": sentences,
            }
        )
    return write_json(tmp_path / "dataset_coco.json", {"images": entries}), images


def test_manifest_counts_sha256_and_skip_reasons(tmp_path):
    karpathy, images = _bad_karpathy(tmp_path)
    out = tmp_path / "o"
    manifest = prepare("coco_caption", "--karpathy-json", karpathy, "--images", images, "--out", out, "--shard-size", 2)
    assert counts(manifest) == {"train": 4, "val": 0, "test": 0}  # restval merged into train
    train = manifest["splits"]["train"]
    assert [s["num_samples"] for s in train["shards"]] == [2, 2] and train["warnings"] == {
        "caption dropped: empty text": 1
    }
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
            assert (out / shard["file"]).stat().st_size == shard["bytes"]
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"train-000000.tar": 2, "train-000001.tar": 2}
    skipped = {s["id"]: s for split in manifest["splits"].values() for s in split["skipped"]}
    assert skipped["coco_cap-5"]["reason"].startswith("empty text")
    assert skipped["coco_cap-6"]["reason"].startswith("corrupt image")
    assert skipped["coco_cap-7"]["reason"].startswith("unsafe path")
    assert manifest["splits"]["val"]["skip_reasons"] == {"empty text": 1, "unsafe path": 1}
    assert manifest["recipe"] == "coco_caption" and manifest["args"]["shard_size"] == 2
    assert manifest["complete"] and manifest["created"]
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["splits"]["test"]["skipped"][0]["origin"].endswith("images[5]")
    assert len(read_split(out, "train")) == 4

    with pytest.raises(PrepareError) as error:
        prepare(
            "coco_caption",
            "--karpathy-json",
            karpathy,
            "--images",
            images,
            "--out",
            tmp_path / "strict",
            "--strict",
            "--splits",
            "val",
        )  # val's first candidate is the all-blank image 5
    assert str(karpathy) in str(error.value) and "coco_cap-5" in str(error.value)
    assert not list((tmp_path / "strict").glob("*.tar"))

    keep = prepare(
        "coco_caption", "--karpathy-json", karpathy, "--images", images, "--out", tmp_path / "rv", "--keep-restval"
    )
    assert counts(keep)["restval"] == 1 and counts(keep)["train"] == 3


def test_missing_inputs_say_what_was_expected_where(raw, tmp_path):
    with pytest.raises(PrepareError, match=r"expected Karpathy caption file .* at .*nothere\.json"):
        prepare(
            "coco_caption",
            "--karpathy-json",
            tmp_path / "nothere.json",
            "--images",
            raw / "images",
            "--out",
            tmp_path / "o",
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="v2_OpenEnded_mscoco_<subtype>_questions.json"):
        prepare("vqav2", "--vqa-dir", tmp_path / "empty", "--images", raw / "images", "--out", tmp_path / "o")
    with pytest.raises(PrepareError, match="is --images pointing at the right folder"):
        prepare(
            "coco_caption",
            "--karpathy-json",
            raw / "dataset_coco.json",
            "--images",
            tmp_path / "empty",
            "--out",
            tmp_path / "o2",
        )
    with pytest.raises(PrepareError, match="no input for split"):
        prepare(
            "snli_ve",
            "--jsonl-dir",
            raw / "snli_ve",
            "--images",
            *split_roots(raw),
            "--splits",
            "val",
            "--out",
            tmp_path / "o3",
        )


def test_images_from_zip_and_unsafe_archive_members(raw, tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((raw / "images").rglob("*.jpg")):
            zf.write(path, path.relative_to(raw / "images").as_posix())
    out = tmp_path / "o"
    manifest = prepare(
        "coco_caption",
        "--karpathy-json",
        raw / "dataset_coco.json",
        "--images",
        archive,
        "--out",
        out,
        "--splits",
        "val",
    )
    assert manifest["splits"]["val"]["num_samples"] == sum(e["split"] == "val" for e in karpathy_images(raw))
    sample = read_split(out, "val")[0]
    entry = next(e for e in karpathy_images(raw) if e["cocoid"] == sample["json"]["image_id"])
    assert sample["jpg"] == (raw / "images" / entry["filepath"] / entry["filename"]).read_bytes()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("val/ok.jpg", image_bytes())
        zf.writestr("../../outside.jpg", image_bytes())
    with pytest.raises(PrepareError, match="unsafe member"):
        prepare(
            "coco_caption", "--karpathy-json", raw / "dataset_coco.json", "--images", evil, "--out", tmp_path / "o2"
        )


# ------------------------------------------------------------------------------------------- atomicity and re-runs

_CRASH_AFTER = """
import os, sys
from data_recipes import cli
from data_recipes.common import writer
original = writer.ShardWriter.add
calls = [0]
def add(self, sample, payload):
    calls[0] += 1
    if calls[0] == int(os.environ["CRASH_AT"]):
        os._exit(9)  # like SIGKILL: no cleanup, no exception handlers
    original(self, sample, payload)
writer.ShardWriter.add = add
cli.run(sys.argv[1:])
"""


def test_killed_run_leaves_no_final_file_and_rerun_completes(raw, tmp_path):
    argv = [
        "coco_caption",
        "--karpathy-json",
        str(raw / "dataset_coco.json"),
        "--images",
        str(raw / "images"),
        "--shard-size",
        "3",
        "--splits",
        "train",
        "--quiet",
    ]
    out = tmp_path / "o"
    env = dict(os.environ, CRASH_AT="8", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER, *argv, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 9, result.stderr
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert (out / "train-000002.tar.partial").exists() and not (out / "train-000002.tar").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["splits"]["train"]["shards"]) == 2
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}

    resumed = prepare(*argv[:-1], "--out", out)
    assert resumed["complete"] and not list(out.glob("*.partial"))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}
    assert all(after[name] == stat for name, stat in before.items())  # finished shards kept as they were
    clean = prepare(*argv[:-1], "--out", tmp_path / "clean")
    assert [s["sha256"] for s in resumed["splits"]["train"]["shards"]] == [
        s["sha256"] for s in clean["splits"]["train"]["shards"]
    ]
    keys = [s["key"] for s in read_split(out, "train")]
    assert len(keys) == len(set(keys)) == sum(e["split"] == "train" for e in karpathy_images(raw))


def test_exception_mid_shard_removes_the_partial_file(raw, tmp_path, monkeypatch):
    from data_recipes.common import writer

    original, calls = writer.ShardWriter.add, [0]

    def failing_add(self, sample, payload):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("disk on fire")
        original(self, sample, payload)

    monkeypatch.setattr(writer.ShardWriter, "add", failing_add)
    argv = ["text_corpus", "--input", raw / "corpus.txt", "--out", tmp_path / "o", "--shard-size", 2]
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare(*argv)
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "sizes.json",
        "train-000000.tar",
        "train-000001.tar",
    ]
    monkeypatch.setattr(writer.ShardWriter, "add", original)
    manifest = prepare(*argv)
    lines = [l for l in (raw / "corpus.txt").read_text().splitlines() if l.strip()]
    assert manifest["complete"] and counts(manifest) == {"train": len(lines)}


def test_rerun_is_a_noop_other_args_are_refused_overwrite_rebuilds(raw, tmp_path):
    argv = ["text_corpus", "--input", raw / "corpus.txt", "--out", tmp_path / "o", "--shard-size", 4]
    first = prepare(*argv)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("*.tar")}
    again = prepare(*argv)
    assert counts(again) == counts(first)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("*.tar")}
    with pytest.raises(PrepareError, match="differs in: shard_size"):
        prepare(*argv[:-1], 100)
    rebuilt = prepare(*argv[:-1], 100, "--overwrite")
    assert sorted(p.name for p in (tmp_path / "o").glob("*.tar")) == ["train-000000.tar"]
    assert counts(rebuilt) == counts(first)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "train-000000.tar").write_bytes(b"")
    with pytest.raises(PrepareError, match="no manifest.json"):
        prepare("text_corpus", "--input", raw / "corpus.txt", "--out", tmp_path / "foreign")


def test_shard_bytes_limit_and_recipe_specific_defaults(raw, tmp_path):
    manifest = prepare(
        "coco_caption",
        "--karpathy-json",
        raw / "dataset_coco.json",
        "--images",
        raw / "images",
        "--out",
        tmp_path / "o",
        "--splits",
        "train",
        "--shard-bytes",
        "8K",
    )
    shards = manifest["splits"]["train"]["shards"]
    # a shard closes once it reaches the limit: at most one sample (< 4 KiB here) plus tar's final padding over it
    assert len(shards) > 2 and all(s["bytes"] <= 8 * 1024 + 4096 + tarfile.RECORDSIZE for s in shards)
    assert sum(s["num_samples"] for s in shards) == sum(e["split"] == "train" for e in karpathy_images(raw))
    text = prepare("text_corpus", "--input", raw / "corpus.txt", "--out", tmp_path / "t")
    assert text["args"]["max_text_chars"] == 100_000 and text["args"]["unit"] == "line"


def test_shuffle_is_seeded_and_max_samples_caps_each_split(raw, tmp_path):
    def keys(seed, name):
        prepare(
            "refcoco",
            "--refer-dir",
            raw / "refcoco",
            "--images",
            *split_roots(raw),
            "--out",
            tmp_path / name,
            "--shuffle",
            "--seed",
            seed,
            "--splits",
            "train",
        )
        return [s["key"] for s in read_split(tmp_path / name, "train")]

    first, same, other = keys(1, "a"), keys(1, "b"), keys(2, "c")
    assert first == same and first != other and sorted(first) == sorted(other)
    manifest = prepare(
        "vqav2", "--vqa-dir", raw / "vqa", "--images", raw / "images", "--out", tmp_path / "m", "--max-samples", 3
    )
    assert counts(manifest) == {"train": 3, "val": 3, "test": 3}
