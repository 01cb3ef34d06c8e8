"""Bring your own data: `ofa-prepare table | coco_json | class_folders | hf_dataset` on real photographs
(scikit-image's sample images), for every task family, and `ofa-prepare inspect`.

Each test checks what the kit's tasks then read: the shards are fed through `build_example` of the task.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from data_recipes.cli import main, run
from data_recipes.common.errors import PrepareError
from data_recipes.common.parallel import ordered_map
from data_recipes.inspect_shards import iter_samples

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six real photographs as JPEGs, shrunk to 160 px on the long side (sizes differ: 160x160, 160x107 ...)."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        img = Image.fromarray(getattr(skimage_data, name)())
        img.thumbnail((160, 160))
        img.save(folder / f"{name}.jpg", quality=85)
    return folder


@pytest.fixture(scope="module")
def tok():
    from ofa_lightning.tokenizer import OFATokenizer

    words = (
        "what does the image describe a woman in space suit cup of coffee cat rocket galaxies which region "
        "yes no two is there how many is this color red brown orange the a of"
    )
    return OFATokenizer.train_bpe(
        [words] * 20 + [f" {w}" for w in words.split()] * 10, bpe_vocab_size=600, num_codes=16, num_bins=100
    )


def samples(out: Path, split: str) -> list[tuple[str, dict, bytes | None]]:
    manifest = json.loads((out / "manifest.json").read_text())
    found = []
    for shard in manifest["splits"][split]["shards"]:
        found += [(key, fields, image) for key, fields, image, _ in iter_samples(out / shard["file"])]
    return found


def examples(tok, task_name: str, out: Path, split: str = "train", train: bool = True, **options):
    """The shards' samples as the kit's task builds them (None entries would be task-side skips)."""
    from ofa_lightning.data.samples import build_example
    from ofa_lightning.tasks import build_task

    task = build_task(task_name, tok, **options)
    built = []
    for key, fields, image in samples(out, split):
        raw = {"__key__": key, "json": json.dumps(fields).encode()}
        if image is not None:
            raw["jpg"] = image
        example = build_example(task, raw, train=train, rng=random.Random(0))
        assert not hasattr(example, "reason"), (key, example)
        built.append(example)
    return built


def prepare(*argv: str) -> dict:
    return run([*argv, "--quiet", "--workers", "1"])


def size_of(photos: Path, name: str) -> tuple[int, int]:
    with Image.open(photos / f"{name}.jpg") as img:
        return img.size


def test_csv_captions_ratio_split_keeps_each_image_in_one_split(photos, tmp_path, tok):
    rows = ["file,text"] + [f"{name}.jpg,a photo of {name} number {i}" for i in range(3) for name in PHOTOS]
    rows.append("missing.jpg,a photo that is not there")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "shards"
    manifest = prepare(
        "table",
        "--input",
        str(tmp_path / "captions.csv"),
        "--image-root",
        str(photos),
        "--image-column",
        "file",
        "--task",
        "caption",
        "--map",
        "caption=text",
        "--split-ratio",
        "train=0.5,val=0.5",
        "--split-seed",
        "0",
        "--out",
        str(out),
    )
    files = {split: {f["file_name"] for _, f, _ in samples(out, split)} for split in ("train", "val")}
    assert files["train"] and files["val"] and not files["train"] & files["val"]
    assert sum(manifest["splits"][s]["num_samples"] for s in ("train", "val")) == 18
    skipped = [s for split in manifest["splits"].values() for s in split["skipped"]]
    assert [(s["origin"].split(" ", 1)[1], s["reason"].split(":")[0]) for s in skipped] == [
        ("row 19 (line 20)", "missing image")
    ]
    built = examples(tok, "caption", out)
    assert len(built) == manifest["splits"]["train"]["num_samples"] and built[0].image is not None


def test_jsonl_vqa_inline_base64_answers_with_weights_and_answer_list(photos, tmp_path, tok):
    coffee = base64.b64encode((photos / "coffee.jpg").read_bytes()).decode()
    rows = [
        {"img": "chelsea.jpg", "q": "is there a cat", "answers": ["yes", "yes", "no"], "w": [1.0, 1.0, 0.3]},
        {"img": f"data:image/jpeg;base64,{coffee}", "q": "what is this", "answers": ["coffee", "coffee", "cup"]},
        {"img": coffee, "q": "how many cups", "answer": "one"},
        {"img": "rocket.jpg", "q": "is this a rocket"},
    ]
    lines = [json.dumps(r) for r in rows[:3]] + ["{not json", json.dumps(rows[3])]
    (tmp_path / "vqa.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "shards"
    manifest = prepare(
        "table",
        "--input",
        f"train={tmp_path / 'vqa.jsonl'}",
        "--image-root",
        str(photos),
        "--image-column",
        "img",
        "--task",
        "vqa",
        "--map",
        "question=q,answer_weights=w",
        "--out",
        str(out),
    )
    got = {f["question"]: f for _, f, _ in samples(out, "train")}
    assert got["is there a cat"]["answer_conf"] == {"yes": 1.0, "no": 0.3}
    assert got["what is this"]["answer_conf"] == {"coffee": 0.6, "cup": 0.3}  # agreement scores of 2 and 1 answers
    assert got["how many cups"]["answer_conf"] == {"one": 1.0} and "file_name" not in got["how many cups"]
    assert got["is this a rocket"]["answer_conf"] == {}  # unlabelled (test-style) row
    assert manifest["splits"]["train"]["skipped"][0]["origin"].endswith("vqa.jsonl:4")
    assert json.loads((out / "answers.json").read_text())[:1] == ["coffee"]
    built = examples(tok, "vqa", out, train=False, candidates=str(out / "answers.json"))  # evaluation: unlabelled too
    assert sorted(e.meta["answer"] for e in built) == ["", "coffee", "one", "yes"]


@pytest.mark.parametrize("box_format", ["xyxy", "xywh-norm"])
def test_parquet_grounding_box_formats_bytes_column_and_boxes_outside(photos, tmp_path, tok, box_format):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    width, height = size_of(photos, "astronaut")
    pixel = [10.0, 20.0, 90.0, 120.0]
    box = pixel if box_format == "xyxy" else [10 / width, 20 / height, 80 / width, 100 / height]
    outside = [10.0, 20.0, width + 40.0, 60.0] if box_format == "xyxy" else [0.5, 0.5, 0.9, 0.2]
    data = (photos / "astronaut.jpg").read_bytes()
    table = pa.table(
        {
            "photo": [data, data, data],
            "text": ["the woman", "the flag", "a second woman"],
            "region": [box, outside, box],
            "id": ["a", "b", "a"],
        }
    )
    pq.write_table(table, tmp_path / "refs.parquet")
    out = tmp_path / "shards"
    manifest = prepare(
        "table",
        "--input",
        str(tmp_path / "refs.parquet"),
        "--image-column",
        "photo",
        "--task",
        "grounding",
        "--map",
        "expression=text,box=region",
        "--id-column",
        "id",
        "--box-format",
        box_format,
        "--max-bad-fraction",
        "0.9",
        "--out",
        str(out),
    )
    [(key, fields, _)] = samples(out, "train")
    assert fields["box"] == pytest.approx(pixel, abs=1e-3) and key == "own-a"
    assert manifest["splits"]["train"]["skip_reasons"] == {"box outside image": 1, "duplicate id": 1}
    [example] = examples(tok, "grounding", out)
    assert example.meta["reference"] == pytest.approx(pixel, abs=1e-3)


def test_coco_json_detection_grounding_and_captions(photos, tmp_path, tok):
    width, height = size_of(photos, "chelsea")
    coco = {
        "images": [{"id": 1, "file_name": "chelsea.jpg"}, {"id": 2, "file_name": "coffee.jpg"}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 8, "name": "cup"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 60, 50]},
            {"id": 2, "image_id": 1, "caption": "a cat looking to the side"},
            {"id": 3, "image_id": 2, "category_id": 8, "bbox": [30, 10, 50, 40]},
            {"id": 4, "image_id": 2, "caption": "a cup of coffee"},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    common = ["--input", str(tmp_path / "ann.json"), "--images", str(photos)]
    prepare("coco_json", *common, "--task", "detection", "--out", str(tmp_path / "det"))
    det = {f["file_name"]: f for _, f, _ in samples(tmp_path / "det", "train")}
    assert det["chelsea.jpg"]["boxes"] == [[5.0, 5.0, 65.0, 55.0]] and det["chelsea.jpg"]["labels"] == ["cat"]
    assert len(examples(tok, "detection", tmp_path / "det")) == 2
    prepare("coco_json", *common, "--task", "grounding", "--out", str(tmp_path / "ground"))
    assert sorted(f["expression"] for _, f, _ in samples(tmp_path / "ground", "train")) == ["cat", "cup"]
    assert len(examples(tok, "grounded_caption", tmp_path / "ground")) == 2
    prepare("coco_json", *common, "--task", "caption", "--out", str(tmp_path / "cap"))
    caps = sorted(f["captions"][0] for _, f, _ in samples(tmp_path / "cap", "train"))
    assert caps == ["a cat looking to the side", "a cup of coffee"]
    assert len(examples(tok, "image_text_matching", tmp_path / "cap")) == 2


def test_class_folders_classification_with_split_folders(photos, tmp_path, tok):
    for split, names in {"train": PHOTOS[:4], "val": PHOTOS[4:]}.items():
        for i, name in enumerate(names):
            folder = tmp_path / "root" / split / ("cat_face" if i % 2 else "other")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.jpg").write_bytes((photos / f"{name}.jpg").read_bytes())
    (tmp_path / "root" / "train" / "other" / "notes.txt").write_text("not an image")
    out = tmp_path / "shards"
    manifest = prepare("class_folders", "--root", str(tmp_path / "root"), "--split-folders", "--out", str(out))
    assert manifest["splits"]["train"]["num_samples"] == 4 and manifest["splits"]["val"]["num_samples"] == 2
    assert manifest["splits"]["train"]["skip_reasons"] == {"corrupt image": 1}
    assert json.loads((out / "classes.json").read_text()) == ["cat face", "other"]
    assert {f["class_name"] for _, f, _ in samples(out, "val")} == {"cat face", "other"}
    assert len(examples(tok, "image_classification", out, train_augment="none")) == 4


def test_hf_dataset_saved_to_disk_with_image_feature(photos, tmp_path, tok, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    rows = {"image": [str(photos / f"{n}.jpg") for n in PHOTOS[:3]], "caption": ["a woman", "coffee", "a cat"]}
    full = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": full.select([0, 1]), "test": full.select([2])}).save_to_disk(tmp_path / "hf")
    out = tmp_path / "shards"
    manifest = prepare("hf_dataset", "--dataset", str(tmp_path / "hf"), "--task", "caption", "--out", str(out))
    assert {s: manifest["splits"][s]["num_samples"] for s in manifest["splits"]} == {"train": 2, "test": 1}
    [(_, fields, image)] = samples(out, "test")
    assert fields["captions"] == ["a cat"] and image == (photos / "chelsea.jpg").read_bytes()
    assert len(examples(tok, "caption", out)) == 2
    # a folder of local Parquet files: splits from the file names, read by datasets in streaming mode
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    data = (photos / "rocket.jpg").read_bytes()
    for split, n in (("train", 3), ("validation", 1)):
        pq.write_table(
            pa.table({"picture": [{"bytes": data, "path": None}] * n, "text": ["a rocket"] * n}),
            tmp_path / "pq" / f"{split}.parquet",
        )
    manifest = prepare(
        "hf_dataset",
        "--dataset",
        str(tmp_path / "pq"),
        "--task",
        "image_text_matching",
        "--image-column",
        "picture",
        "--map",
        "captions=text",
        "--out",
        str(tmp_path / "pq_out"),
    )
    assert {s: manifest["splits"][s]["num_samples"] for s in manifest["splits"]} == {"train": 3, "validation": 1}


def test_text_only_and_template_fields(photos, tmp_path, tok):
    (tmp_path / "news.tsv").write_text("body\theadline\nthe prime minister resigned on monday\tpm resigns\n")
    out = tmp_path / "text"
    prepare(
        "table",
        "--input",
        str(tmp_path / "news.tsv"),
        "--task",
        "text",
        "--map",
        "article=body,summary=headline",
        "--out",
        str(out),
    )
    [(_, fields, image)] = samples(out, "train")
    assert image is None and fields["summary"] == "pm resigns"
    assert len(examples(tok, "gigaword", out)) == 1

    (tmp_path / "regions.csv").write_text('file,what,where\nastronaut.jpg,the woman,"[10, 20, 90, 120]"\n')
    (tmp_path / "mapping.yaml").write_text(
        "task: fields\nimage_column: file\nbox_format: xyxy\nmap: {label: what, region_box: where}\n"
    )
    out = tmp_path / "fields"
    prepare(
        "table",
        "--input",
        str(tmp_path / "regions.csv"),
        "--mapping",
        str(tmp_path / "mapping.yaml"),
        "--image-root",
        str(photos),
        "--out",
        str(out),
    )
    [(_, fields, _)] = samples(out, "train")
    assert fields["region_box"] == [10.0, 20.0, 90.0, 120.0] and fields["label"] == "the woman"
    built = examples(tok, "template", out, source="[IMAGE] what is in region [BOX:region_box]?", target="[TEXT:label]")
    assert built[0].meta["reference"] == "the woman"


def test_bad_rows_are_counted_with_row_numbers_and_mostly_bad_files_stop(photos, tmp_path):
    good = [f"{name}.jpg,{name}" for name in PHOTOS]
    raw = (
        ("image,caption\n" + "\n".join(good[:3]) + "\n").encode()
        + b"coffee.jpg,caf\xe9 latte\n"
        + ("\n".join(good[3:]) + "\nchelsea.jpg,\n").encode()
    )
    (tmp_path / "c.csv").write_bytes(raw)
    out = tmp_path / "shards"
    manifest = prepare(
        "table", "--input", str(tmp_path / "c.csv"), "--image-root", str(photos), "--task", "caption", "--out", str(out)
    )
    reasons = {s["origin"].split(" ", 1)[1]: s["reason"].split(":")[0] for s in manifest["splits"]["train"]["skipped"]}
    assert reasons == {"row 4 (line 5)": "non-UTF-8 text", "row 8 (line 9)": "missing field"}
    assert manifest["splits"]["train"]["num_samples"] == 6

    (tmp_path / "bad.csv").write_text("image,caption\n" + "\n".join(f"nope{i}.jpg,x" for i in range(30)) + "\n")
    with pytest.raises(
        PrepareError,
        match=r"20 of the first 20 rows failed.*bad\.csv row 1 \(line 2\): missing "
        r"image",
    ):
        prepare(
            "table",
            "--input",
            str(tmp_path / "bad.csv"),
            "--image-root",
            str(photos),
            "--task",
            "caption",
            "--out",
            str(tmp_path / "bad"),
        )
    assert (
        main(
            [
                "table",
                "--input",
                str(tmp_path / "bad.csv"),
                "--task",
                "grounding",
                "--quiet",
                "--out",
                str(tmp_path / "bad2"),
            ]
        )
        == 2
    )  # boxes without --box-format: a one-line error


def test_workers_give_identical_shards_and_the_pool_streams(photos, tmp_path):
    rows = ["file,text"] + [f"{name}.jpg,photo {i}" for i in range(4) for name in PHOTOS]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    digests = []
    for workers in ("1", "2"):
        manifest = run(
            [
                "table",
                "--input",
                str(tmp_path / "c.csv"),
                "--image-root",
                str(photos),
                "--task",
                "caption",
                "--map",
                "captions=text",
                "--shard-size",
                "10",
                "--quiet",
                "--workers",
                workers,
                "--out",
                str(tmp_path / f"w{workers}"),
            ]
        )
        digests.append([s["sha256"] for s in manifest["splits"]["train"]["shards"]])
    assert digests[0] == digests[1] and len(digests[0]) == 3
    (tmp_path / "w2" / "train-000002.tar").unlink()  # a lost shard: the re-run writes it again, the same
    (tmp_path / "w2" / "train-000001.tar").write_bytes(b"truncated")
    manifest = run(
        [
            "table",
            "--input",
            str(tmp_path / "c.csv"),
            "--image-root",
            str(photos),
            "--task",
            "caption",
            "--map",
            "captions=text",
            "--shard-size",
            "10",
            "--quiet",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "w2"),
        ]
    )
    assert [s["sha256"] for s in manifest["splits"]["train"]["shards"]] == digests[0]
    # an endless input: only a bounded window is ever submitted, so taking 40 results returns
    assert [r for _, r in itertools.islice(ordered_map(abs, itertools.count(), 2), 40)][-1] == 39


def test_inspect_reports_stats_skips_and_draws_boxes(photos, tmp_path, capsys):
    (tmp_path / "det.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"image": "rocket.jpg", "boxes": [[0, 0, 40, 60]], "labels": ["rocket"]},
                {"image": "coffee.jpg", "boxes": [[10, 10, 50, 50], [60, 5, 100, 40]], "labels": ["cup", "saucer"]},
                {"image": "coffee.jpg", "boxes": [[0, 0, 500, 500]], "labels": ["too big"]},
            ]
        )
        + "\n"
    )
    out = tmp_path / "shards"
    prepare(
        "table",
        "--input",
        str(tmp_path / "det.jsonl"),
        "--image-root",
        str(photos),
        "--task",
        "detection",
        "--box-format",
        "xyxy",
        "--out",
        str(out),
    )
    assert (
        main(
            [
                "inspect",
                str(out),
                "--num",
                "4",
                "--sheet",
                str(tmp_path / "sheet.png"),
                "--json",
                str(tmp_path / "stats.json"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "skip reasons: box outside image 1" in text and "det.jsonl:3: box outside image" in text
    stats = json.loads((tmp_path / "stats.json").read_text())[str(out)]["train"]
    assert stats["samples"] == 2 and stats["tasks"] == {"detection": 2} and stats["boxes"] == 3
    assert stats["top_labels"] == {"rocket": 1, "cup": 1, "saucer": 1}
    with Image.open(tmp_path / "sheet.png") as sheet:
        pixels = sheet.convert("RGB")
        # the rocket's box [0, 0, 40, 60] is drawn in red on the first tile (image scaled into a 256 px square)
        reds = sum(1 for x in range(4, 260) for y in range(4, 260) if pixels.getpixel((x, y)) == (255, 48, 48))
    assert reds > 100


@pytest.mark.parametrize(
    "box_format, raw",
    [
        ("xyxy", [10, 20, 90, 120]),
        ("xywh", [10, 20, 80, 100]),
        ("cxcywh", [50, 70, 80, 100]),
        ("xyxy-norm", [0.05, 0.1, 0.45, 0.6]),
        ("xywh-norm", "0.05 0.1 0.4 0.5"),
        ("cxcywh-norm", "[0.25, 0.35, 0.4, 0.5]"),
    ],
)
def test_box_formats_convert_to_pixel_xyxy(box_format, raw):
    from data_recipes.generic.fields import convert_box

    assert convert_box(raw, "box", box_format, 200, 200) == pytest.approx([10, 20, 90, 120])


def test_boxes_are_checked_against_the_image():
    from data_recipes.common.errors import BadSample
    from data_recipes.generic.fields import convert_box

    assert convert_box([-0.5, 0, 100.8, 50], "box", "xyxy", 100, 50) == [0.0, 0.0, 100.0, 50.0]  # 1 px overhang
    for raw, fmt, reason in [
        ([0, 0, 103, 50], "xyxy", "box outside image"),
        ([0, 0, 1.2, 0.5], "xyxy-norm", "box outside image"),
        ([50, 10, 20, 40], "xyxy", "bad box"),
        ([1, 2, 3], "xywh", "bad box"),
    ]:
        with pytest.raises(BadSample, match=reason):
            convert_box(raw, "box", fmt, 100, 50)


def _coco_file(path: Path, images: int) -> Path:
    coco = {
        "info": {"description": "made by the test"},
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(images)],
        "annotations": [
            {"id": 10 * i + k, "image_id": i, "bbox": [1.5, 2, 10, 12], "category_id": k % 2, "caption": f"c {i} {k}"}
            for i in range(images)
            for k in range(3)
        ],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    path.write_text(json.dumps(coco))
    return path


def _peak_bytes(work) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_coco_json_and_duplicate_ids_take_constant_memory(tmp_path):
    """Reading a COCO JSON (streamed into an on-disk index) and the duplicate-id set (on disk) use the same peak
    memory for 20x the rows: nothing is held per row."""
    from data_recipes.common.disk_index import CocoIndex, KeySet

    small, large = _coco_file(tmp_path / "small.json", 500), _coco_file(tmp_path / "large.json", 10_000)

    def read(path: Path):
        def work():
            index = CocoIndex(path)
            joined = sum(len(index.annotations(info["id"])) for _, info in index.images())
            assert joined == 3 * (500 if path == small else 10_000)
            assert index.categories == {0: "cat", 1: "dog"}
            index.close()

        return work

    def keys(n: int):
        def work():
            seen = KeySet()
            for i in range(n):
                seen.add(f"key-{i}")
            assert len(seen) == n and "key-7" in seen and "key-x" not in seen
            seen.close()

        return work

    assert _peak_bytes(read(large)) < 1.5 * _peak_bytes(read(small)) + 256 * 1024
    assert _peak_bytes(keys(20_000)) < 1.5 * _peak_bytes(keys(1_000)) + 256 * 1024
    # the full recipe keeps the file order of annotations and the category names
    index = CocoIndex(small)
    assert [a["caption"] for a in index.annotations(3)] == ["c 3 0", "c 3 1", "c 3 2"]
    assert index.annotations(3)[0]["bbox"] == [1.5, 2, 10, 12]


def test_coco_json_that_is_not_coco_is_one_clear_error(tmp_path):
    from data_recipes.common.disk_index import CocoIndex

    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "noimages.json").write_text('{"annotations": []}')
    (tmp_path / "broken.json").write_text('{"images": [{"id": 1,')
    with pytest.raises(PrepareError, match="is not a JSON object"):
        CocoIndex(tmp_path / "list.json")
    with pytest.raises(PrepareError, match="has no 'images' list"):
        CocoIndex(tmp_path / "noimages.json")
    with pytest.raises(PrepareError, match="not valid JSON"):
        CocoIndex(tmp_path / "broken.json")
