"""Recipes that add VQ codes to shards (vq_infilling, vq_text_to_image) on tiny shapes data."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from data_recipes import cli
from data_recipes.common.errors import PrepareError
from data_recipes.shapes import generate_shapes
from ofa_lightning.data.shards import iter_tar_samples
from ofa_lightning.vq import VQConfig, VQModel


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqrec")
    generate_shapes(root / "raw", num_images=10, seed=3, image_size=48)
    cli.run(
        [
            "coco_caption",
            "--karpathy-json",
            str(root / "raw" / "dataset_coco.json"),
            "--images",
            str(root / "raw" / "images"),
            "--out",
            str(root / "coco_caption"),
            "--quiet",
            "--strict",
        ]
    )
    torch.manual_seed(0)
    vq = VQModel(VQConfig.preset("shapes_small", n_embed=32, ch=8, norm_groups=4)).eval()
    vq.save(root / "vq.pt")
    return root, vq


def read(folder, split):
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for shard in manifest["splits"][split]["shards"]:
        out.extend(iter_tar_samples(str(folder / shard["file"])))
    return manifest, out


def test_infilling_codes_are_the_centre_of_the_stored_image(inputs, one_thread):
    root, vq = inputs
    out = root / "infill"
    argv = [
        "vq_infilling",
        "--shards",
        str(root / "coco_caption"),
        "--vq",
        str(root / "vq.pt"),
        "--image-size",
        "64",
        "--code-image-size",
        "32",
        "--out",
        str(out),
        "--quiet",
    ]
    manifest = cli.run(argv)
    assert manifest["complete"] and manifest["recipe"] == "vq_infilling"
    src, _ = read(root / "coco_caption", "train")
    manifest, samples = read(out, "train")
    assert manifest["splits"]["train"]["num_samples"] == src["splits"]["train"]["num_samples"] == len(samples) > 0
    sample = samples[0]
    fields = json.loads(sample["json"])
    assert fields["code_grid"] == 4 and len(fields["codes"]) == 16
    image = Image.open(io.BytesIO(sample["png"])).convert("RGB")
    assert image.size == (64, 64)
    expected = vq.encode(image.crop((16, 16, 48, 48)), image_size=32).view(-1).tolist()
    assert fields["codes"] == expected
    assert fields["source_key"].startswith("coco_cap")
    from ofa_lightning.tasks import build_task
    from ofa_lightning.tokenizer import OFATokenizer

    tok = OFATokenizer.train_bpe(
        ["what is the image in the middle part?"] * 4, bpe_vocab_size=280, num_codes=32, num_bins=8
    )
    task = build_task("image_infilling", tok, image_size=64, code_image_size=32)
    ex = task.build_example(fields, image, True, None)
    assert ex is not None and ex.code_mask and ex.image.shape == (3, 64, 64)
    assert ex.target == tok.codes_to_ids(fields["codes"]) + [tok.eos_id]
    assert torch.all(ex.image[:, 16:48, 16:48] == 0)  # the encoded centre is the masked one
    again = cli.run(argv)  # a re-run with the same arguments leaves the complete splits alone
    assert again["splits"]["train"]["shards"] == manifest["splits"]["train"]["shards"]


def test_text_to_image_one_sample_per_caption_and_the_task_reads_it(inputs, one_thread):
    from ofa_lightning.tasks import build_task
    from ofa_lightning.tokenizer import OFATokenizer

    root, vq = inputs
    out = root / "t2i"
    cli.run(
        [
            "vq_text_to_image",
            "--shards",
            str(root / "coco_caption"),
            "--vq",
            str(root / "vq.pt"),
            "--image-size",
            "64",
            "--keep-image",
            "--out",
            str(out),
            "--quiet",
            "--splits",
            "val",
        ]
    )
    _, src = read(root / "coco_caption", "val")
    _, samples = read(out, "val")
    captions = [c for s in src for c in json.loads(s["json"])["captions"]]
    assert sorted(json.loads(s["json"])["caption"] for s in samples) == sorted(captions)
    first = json.loads(samples[0]["json"])
    assert len(first["codes"]) == 64 and first["code_grid"] == 8
    image = Image.open(io.BytesIO(samples[0]["png"])).convert("RGB")
    assert first["codes"] == vq.encode(image, image_size=64).view(-1).tolist()
    same_image = [json.loads(s["json"]) for s in samples if json.loads(s["json"])["source_key"] == first["source_key"]]
    assert len(same_image) == 5 and all(s["codes"] == first["codes"] for s in same_image)

    tok = OFATokenizer.train_bpe(captions * 3, bpe_vocab_size=300, num_codes=32, num_bins=8)
    task = build_task("text_to_image", tok, code_image_size=64)
    ex = task.build_example(first, None, True, None)
    assert ex is not None and ex.code_mask and ex.constraint == "codes"
    assert ex.target[:-1] == tok.codes_to_ids(first["codes"]) and ex.target[-1] == tok.eos_id


def test_bad_inputs_stop_with_a_clear_error(inputs, tmp_path):
    root, _ = inputs
    with pytest.raises(PrepareError, match="manifest.json"):
        cli.run(
            ["vq_text_to_image", "--shards", str(tmp_path), "--vq", str(root / "vq.pt"), "--out", str(tmp_path / "o")]
        )
    with pytest.raises(PrepareError, match="VQ checkpoint"):
        cli.run(
            [
                "vq_infilling",
                "--shards",
                str(root / "coco_caption"),
                "--vq",
                str(tmp_path / "none.pt"),
                "--out",
                str(tmp_path / "o2"),
                "--quiet",
            ]
        )
    with pytest.raises(PrepareError, match="multiple of 8"):
        cli.run(
            [
                "vq_infilling",
                "--shards",
                str(root / "coco_caption"),
                "--vq",
                str(root / "vq.pt"),
                "--code-image-size",
                "20",
                "--out",
                str(tmp_path / "o3"),
                "--quiet",
            ]
        )
