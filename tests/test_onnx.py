"""ONNX graphs (encoder, decoder first step, decoder step with a key/value cache) under onnxruntime: encoder states
and step logits within 1e-4 of PyTorch, and the kit's beam search over them returns the same tokens as over the
PyTorch model, for captioning and trie-constrained VQA, on weights converted from ModelScope's port."""

from __future__ import annotations

import pytest
import torch
from modelscope_ref import perturbed_reference

from ofa_lightning.errors import UserError
from ofa_lightning.export.onnx_graphs import export_onnx
from ofa_lightning.export.onnx_runner import OnnxOFA
from ofa_lightning.generation import GenerationConfig, Trie, generate
from ofa_lightning.model.outputs import DecoderCache
from ofa_lightning.weights.convert import from_modelscope_state_dict, infer_config

TOL = 1e-4
SIZE = 96


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ms = perturbed_reference(dict(encoder_layers=2, decoder_layers=2))
    ours = from_modelscope_state_dict(ms.state_dict(), infer_config(ms.state_dict(), dropout=0.0)).eval()
    folder = export_onnx(ours, tmp_path_factory.mktemp("onnx"), image_size=SIZE)
    return ours, OnnxOFA(folder, threads=1)


def inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 50000, (batch, 9), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    ids[-1, 6:] = torch.tensor([2, 1, 1])  # a padded row: dynamic source length per row
    return {
        "input_ids": ids,
        "patch_images": torch.randn(batch, 3, SIZE, SIZE, generator=g),
        "patch_masks": torch.ones(batch, dtype=torch.bool),
    }


@torch.no_grad()
def test_encoder_states_and_step_logits_match_pytorch(pair):
    ours, onnx = pair
    b = inputs(3)
    enc = ours.encode(b["input_ids"], b["patch_images"], b["patch_masks"])
    got = onnx.encode(b["input_ids"], b["patch_images"], b["patch_masks"])
    assert (got.hidden - enc.hidden).abs().max() <= TOL
    assert torch.equal(got.padding_mask, enc.padding_mask)
    tokens = torch.tensor([[0, 50, 60, 70], [0, 51, 61, 71], [0, 52, 62, 72]])
    mine, theirs = DecoderCache(), onnx.new_cache()
    for t in range(1, tokens.shape[1] + 1):  # BOS step, then three cached steps
        ref = ours.decode(tokens[:, :t], enc, cache=mine)[:, -1]
        out = onnx.decode(tokens[:, :t], got, cache=theirs)[:, -1]
        assert (out - ref).abs().max() <= TOL, t


@torch.no_grad()
def test_beam_search_caption_same_tokens(pair):
    ours, onnx = pair
    b = inputs(2, seed=1)
    config = GenerationConfig(beam_size=5, max_len_b=12, min_len=2, no_repeat_ngram_size=3)
    ref = generate(ours, b, config)
    got = onnx.generate(b, config)
    assert [[h.tokens.tolist() for h in hs] for hs in got] == [[h.tokens.tolist() for h in hs] for hs in ref]


@torch.no_grad()
def test_beam_search_vqa_trie_same_tokens(pair):
    ours, onnx = pair
    answers = [[100, 2], [200, 300, 2], [200, 301, 2], [4000, 2]]
    trie = Trie(answers, eos=2)
    b = inputs(2, seed=2)
    config = GenerationConfig(beam_size=4, max_len_b=4, min_len=1)
    ref = generate(ours, b, config, constraint_trie=trie)
    got = onnx.generate(b, config, constraint_trie=trie)
    ref_tokens = [[h.tokens.tolist() for h in hs] for hs in ref]
    assert [[h.tokens.tolist() for h in hs] for hs in got] == ref_tokens
    assert all(toks[0] in ([100, 2], [200, 300, 2], [200, 301, 2], [4000, 2]) for toks in ref_tokens)


def test_runner_refuses_what_the_graphs_do_not_run(pair):
    _, onnx = pair
    b = inputs(1)
    with pytest.raises(UserError, match="strategy='sampling'"):
        onnx.generate(b, GenerationConfig(strategy="sampling"))
    with pytest.raises(UserError, match="gen_code"):
        onnx.generate(b, GenerationConfig(gen_code=True))
    with pytest.raises(UserError, match="text-only"):
        onnx.encode(b["input_ids"])
