"""OFA-CN's Chinese vocabulary (tokenizer=ofa_bert_cn): layout, ids against OFA's own path (transformers'
BertTokenizer + dict.txt, fairseq's ``BertBPE``) and against ModelScope's ``OFATokenizerZH``, save/load.

OFA-CN's files (OFA-Sys/OFA ``utils/BERT_CN_dict/``) are read from ../shared/ofa_bert_cn (or $OFA_BERT_CN_DIR);
tests that need them are skipped when absent.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import os
import pickle
import random
import threading
from pathlib import Path

import pytest

from ofa_lightning.tokenizer import OFATokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))
HAVE_BERT_CN = all((BERT_CN_DIR / n).is_file() for n in ("vocab.txt", "dict.txt"))
pytestmark = pytest.mark.skipif(
    not HAVE_BERT_CN, reason=f"OFA-CN vocabulary (vocab.txt, dict.txt) not found in {BERT_CN_DIR}; set OFA_BERT_CN_DIR"
)

N_STRINGS = 2400
UNK_PIECE_ID = 104  # OFA-CN: BERT's [UNK] is dict.txt line 100


def _vocab_lines() -> list[str]:
    text = (BERT_CN_DIR / "vocab.txt").read_text(encoding="utf-8")
    return text.split("\n")[:-1]


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_bert_files(BERT_CN_DIR)


def _mixed_strings(n: int, seed: int = 0, literals: bool = True) -> list[str]:
    """Chinese / English / digit / punctuation mixtures, with some characters outside the vocabulary and (when
    ``literals``) OFA's literal tokens."""
    rng = random.Random(seed)
    vocab = _vocab_lines()
    cjk = [t for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    words = [t for t in vocab if t.isascii() and t.isalpha() and len(t) > 2][:3000]
    ascii_punct = list("!\"#$%&'()*+,-./:;=?@\\^_`{|}~")
    cn_punct = list("，。？！、：；“”‘’（）《》【】…—～·")
    rare = ["😀", "🍜", "\U00020000", "\u2603", "ǅ", "ß", "Ω", "é", "Å", "ñ", "\u00a0", "\t", "\u3000", "\u200b"]

    def piece() -> str:
        r = rng.random()
        if r < 0.45:
            return "".join(rng.choice(cjk) for _ in range(rng.randint(1, 6)))
        if r < 0.62:
            w = rng.choice(words)
            return rng.choice([w, w.capitalize(), w.upper(), w + rng.choice(["ing", "ed", "s", "ly", "x"])])
        if r < 0.72:
            return str(rng.randint(0, 10 ** rng.randint(1, 8)))
        if r < 0.82:
            return rng.choice(cn_punct)
        if r < 0.90:
            return rng.choice(ascii_punct)
        if r < 0.95:
            return rng.choice(rare)
        if literals:
            return rng.choice([f"<bin_{rng.randint(0, 999)}>", f"<code_{rng.randint(0, 8191)}>", "<mask>"])
        return rng.choice(cjk)

    out = []
    for _ in range(n):
        parts = [piece() for _ in range(rng.randint(1, 12))]
        out.append("".join(p + rng.choice(["", "", " ", "  "]) for p in parts))
    return out


# ---------------------------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------------------------
def test_layout_equals_ofa_cn_dictionary(tok):
    # OFA's tasks/ofa_task.py: fairseq's 4 specials, dict.txt in file order, <mask>, 8192 codes, 1000 bins
    assert tok.language == "zh"
    assert tok.num_text_tokens == 21128
    assert (tok.mask_id, tok.code_range, tok.bin_range, tok.vocab_size) == (
        21132,
        (21133, 29325),
        (29325, 30325),
        30325,
    )
    assert [tok.id_to_token(i) for i in (0, 1, 2, 3, 4, 104, 105, 106)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
    ]
    assert tok.token_to_id("图") == 4 + _vocab_lines().index("图")
    assert tok.token_to_id("<bin_999>") == 30324 and tok.id_to_token(21133) == "<code_0>"


# ---------------------------------------------------------------------------------------------------------------
# ids: OFA's own path (fairseq BertBPE = transformers' BertTokenizer, then dict.txt) and ModelScope's port
# ---------------------------------------------------------------------------------------------------------------
def _fairseq_dict_index() -> dict[str, int]:
    index: dict[str, int] = {}
    for line_no, line in enumerate((BERT_CN_DIR / "dict.txt").read_text(encoding="utf-8").split("\n")[:-1]):
        index.setdefault(line.rpartition(" ")[0], 4 + line_no)
    return index


def test_ids_equal_ofa_bert_bpe(tok):
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertTokenizer(str(BERT_CN_DIR / "vocab.txt"), do_lower_case=True)  # fairseq BertBPE
    index = _fairseq_dict_index()
    texts = _mixed_strings(N_STRINGS, seed=1, literals=False)
    expected = [[index.get(p, 3) for p in bert.tokenize(t)] for t in texts]
    got = tok.encode_batch(texts)
    mismatches = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    assert not mismatches, mismatches[:3]
    assert sum(UNK_PIECE_ID in ids for ids in got) > 50  # characters outside the vocabulary were exercised
    assert sum(len(ids) for ids in got) > 10 * N_STRINGS


def _modelscope_tokenizer(tmp_path: Path, with_literals: bool):
    pytest.importorskip("transformers")
    pytest.importorskip("modelscope")
    from modelscope_ref import load_ms_ofa

    load_ms_ofa()  # the minimal import path of ModelScope's OFA package
    module = importlib.import_module("modelscope.models.multi_modal.ofa.tokenization_ofa")
    # A ModelScope Chinese OFA model's vocab.txt: fairseq's 4 specials, BERT's vocabulary, <mask>
    folder = tmp_path / "ms_zh"
    folder.mkdir()
    lines = ["<s>", "<pad>", "</s>", "<unk>"] + _vocab_lines() + ["<mask>"]
    with open(folder / "vocab.txt", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    ms = module.OFATokenizerZH(str(folder / "vocab.txt"))
    if with_literals:  # as ModelScope's OfaBasePreprocessor does (9,192 added tokens make every call slow)
        ms.add_tokens([f"<code_{i}>" for i in range(8192)])
        ms.add_tokens([f"<bin_{i}>" for i in range(1000)])
    return ms, folder


def _compare_with_modelscope(ms, texts: list[str], got: list[list[int]]) -> list[list[int]]:
    ms_ids = [ms(t, add_special_tokens=False)["input_ids"] for t in texts]
    # The one documented difference: a piece outside the vocabulary is ModelScope's <unk> (3), while OFA-CN's
    # fairseq BertBPE writes BERT's [UNK], dict id 104. Everything else is id-for-id equal.
    mapped = [[UNK_PIECE_ID if i == 3 else i for i in ids] for ids in ms_ids]
    mismatches = [(t, m, g) for t, m, g in zip(texts, mapped, got) if m != g]
    assert not mismatches, mismatches[:3]
    return ms_ids


def test_ids_equal_modelscope_ofa_tokenizer_zh(tok, tmp_path):
    ms, folder = _modelscope_tokenizer(tmp_path, with_literals=False)
    texts = _mixed_strings(N_STRINGS, seed=2, literals=False)
    got = tok.encode_batch(texts)
    ms_ids = _compare_with_modelscope(ms, texts, got)
    assert sum(3 in ids for ids in ms_ids) > 50  # pieces outside the vocabulary were exercised
    # ModelScope's folder layout (specials in vocab.txt) gives the same tokenizer
    from_ms = OFATokenizer.from_bert_files(folder)
    assert from_ms.vocab_size == tok.vocab_size
    assert from_ms.encode_batch(texts) == got


def test_literals_equal_modelscope_added_tokens(tok, tmp_path):
    ms, _ = _modelscope_tokenizer(tmp_path, with_literals=True)
    assert ms.convert_tokens_to_ids(["<mask>", "<code_0>", "<bin_0>", "<bin_999>"]) == [21132, 21133, 29325, 30324]
    texts = [t for t in _mixed_strings(1500, seed=4, literals=True) if "<" in t][:150]
    got = tok.encode_batch(texts)
    _compare_with_modelscope(ms, texts, got)
    assert sum(any(i >= tok.mask_id for i in ids) for ids in got) > 100  # literals were exercised


# ---------------------------------------------------------------------------------------------------------------
# decode, prompts, save / load
# ---------------------------------------------------------------------------------------------------------------
def test_decode_writes_chinese_without_spaces(tok):
    ids = tok.encode("图片描述了什么内容?")
    assert ids[:2] == [tok.token_to_id("图"), tok.token_to_id("片")]
    assert tok.decode(ids) == "图片描述了什么内容?"
    assert tok.decode(tok.encode("一只 猫 on the sofa , playing", add_bos=True, add_eos=True)) == (
        "一只猫on the sofa, playing"
    )
    assert tok.decode(tok.encode("这段文字 <bin_12> <bin_40>")) == "这段文字 <bin_12> <bin_40>"
    assert tok.decode(tok.encode("<bin_1><bin_2>圆形")) == "<bin_1> <bin_2> 圆形"  # literals stand apart
    assert tok.decode(tok.encode("unaffable")) == "unaffable"  # ## continuations glued


def test_ofa_cn_prompts_encode_as_in_ofa(tok):
    # OFA-Sys/OFA data/mm_data/{caption,refcoco,ocr}_dataset.py, bpe=bert
    for prompt in ("图片描述了什么内容?", '这段文字" 一只猫 "描述的是哪个区域？', "图片上的文字是什么?"):
        ids = tok.encode(prompt)
        assert tok.unk_id not in ids and UNK_PIECE_ID not in ids
        assert len(ids) == len(prompt.replace(" ", ""))  # every character is its own piece


def test_save_load_pickle_and_model_card(tok, tmp_path):
    from ofa_lightning.training.model_card import tokenizer_files, tokenizer_from_files

    texts = _mixed_strings(300, seed=3)
    ids = tok.encode_batch(texts)
    d = tok.save(tmp_path / "tok")
    assert sorted(p.name for p in d.iterdir()) == ["dict.txt", "ofa_tokenizer.json", "vocab.txt"]
    loaded = OFATokenizer.load(d)
    assert loaded.language == "zh" and loaded.vocab_size == tok.vocab_size
    assert loaded.encode_batch(texts) == ids
    assert OFATokenizer.from_ofa_files(d).encode_batch(texts) == ids  # the saved folder is OFA's layout
    assert pickle.loads(pickle.dumps(tok)).encode_batch(texts) == ids  # DataLoader workers pickle it
    files = tokenizer_files(tok)
    assert set(files) == {"vocab.txt", "dict.txt", "ofa_tokenizer.json"}
    assert tokenizer_from_files(files).encode_batch(texts) == ids


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_source_downloads_once(tok, tmp_path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(BERT_CN_DIR))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        t = OFATokenizer.from_bert_files(url, cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert t.encode("图片上的文字是什么?") == tok.encode("图片上的文字是什么?")
    (cached,) = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in cached.iterdir()) == ["dict.txt", "vocab.txt"]
    # the server is gone: a second call is served from the cache
    assert OFATokenizer.from_bert_files(url, cache_dir=tmp_path / "cache").vocab_size == 30325


def test_missing_folder_says_where_the_files_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="BERT_CN_dict"):
        OFATokenizer.from_bert_files(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="expected vocab.txt"):
        OFATokenizer.from_bert_files(tmp_path)
