"""The OFA tokenizer: a text model (English byte-level BPE or Chinese WordPiece) inside OFA's vocabulary layout.

See :mod:`ofa_lightning.tokenizer.vocabulary` for the layout and the literal ``<bin_i>``/``<code_i>``/``<mask>``
rule, :mod:`~ofa_lightning.tokenizer.byte_bpe` for OFA's English vocabulary and
:mod:`~ofa_lightning.tokenizer.wordpiece` for OFA-CN's.

:meth:`OFATokenizer.decode` is the inverse of :meth:`OFATokenizer.encode`: literals are rendered with one space
before them (none at the start of the output), so ``decode(encode(x)) == x`` for English strings whose literals are
each preceded by exactly one space.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ofa_lightning.tokenizer.bpe_training import train_byte_level_bpe
from ofa_lightning.tokenizer.byte_bpe import HF_FILES, OFA_FILES, ByteLevelBPE
from ofa_lightning.tokenizer.sources import fetch_url_dir, is_url
from ofa_lightning.tokenizer.vocabulary import VocabularyLayout, as_int_list
from ofa_lightning.tokenizer.wordpiece import WORDPIECE_FILES, BertWordPiece

MANIFEST_NAME = "ofa_tokenizer.json"
_MANIFEST_FORMAT = "ofa_lightning.OFATokenizer"
_MANIFEST_VERSION = 1
_TEXT_MODELS = {ByteLevelBPE.kind: ByteLevelBPE, BertWordPiece.kind: BertWordPiece}


def _local_folder(spec: str, cache_dir, layouts, what: str, cache_kind: str, hint: str) -> Path:
    if is_url(spec):
        return fetch_url_dir(spec, cache_dir, layouts, what=what, cache_kind=cache_kind)
    directory = Path(spec).expanduser()
    if not directory.exists():
        raise FileNotFoundError(f"{what} directory {directory} does not exist: {hint}")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; pass the directory holding the {what} files")
    return directory


class OFATokenizer(VocabularyLayout):
    """Text model + OFA's layout (control tokens, text, ``<mask>``, codes, bins).

    Build it with :meth:`from_ofa_files` (OFA's English BPE files, directory or URL), :meth:`from_bert_files`
    (OFA-CN's Chinese WordPiece files), :meth:`train_bpe` (small vocabulary for demos) or :meth:`load` (a directory
    written by :meth:`save`).
    """

    def __init__(
        self, text_model: ByteLevelBPE | BertWordPiece, num_codes: int = 8192, num_bins: int = 1000, source: str = ""
    ) -> None:
        super().__init__(text_model.num_text, num_codes, num_bins)
        self._text = text_model
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    @property
    def text_model(self) -> ByteLevelBPE | BertWordPiece:
        return self._text

    @property
    def language(self) -> str:
        """``"en"`` for OFA's BPE vocabularies, ``"zh"`` for OFA-CN's WordPiece: the language of OFA's prompts."""
        return self._text.language

    def __repr__(self) -> str:
        return (
            f"OFATokenizer(vocab_size={self.vocab_size}, text={self.num_text_tokens}, codes={self.num_codes}, "
            f"bins={self.num_bins}, text_model={self._text.kind}, source={self._source!r})"
        )

    # -- constructors ------------------------------------------------------------------------------------------
    @classmethod
    def from_ofa_files(
        cls,
        path_or_url: str | os.PathLike,
        num_codes: int = 8192,
        num_bins: int = 1000,
        cache_dir: str | os.PathLike | None = None,
    ) -> OFATokenizer:
        """Build from OFA's vocabulary files: a directory (or an http(s) URL of one) holding either

        * ``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` (OFA/fairseq: GPT-2 BPE id -> dict.txt line index + 4),
        * ``vocab.json`` + ``merges.txt`` whose ids already are fairseq indices (BART/HF style: ``<s>``..``<unk>``
          at 0..3, text tokens contiguous from 4, optional ``<mask>`` right after them), or
        * ``vocab.txt`` (+ ``dict.txt``): OFA-CN's Chinese WordPiece vocabulary, as :meth:`from_bert_files`.

        The OFA layout wins if several are present. A URL is downloaded once into
        ``cache_dir`` (default ``~/.cache/ofa_lightning/bpe``) under ``<sha256(url)[:16]>/``.
        """
        spec = os.fspath(path_or_url)
        directory = _local_folder(
            spec,
            cache_dir,
            (("OFA", OFA_FILES), ("HF/BART", HF_FILES)),
            "BPE",
            "bpe",
            f"OFA's BPE files ({', '.join(OFA_FILES)}) come with OFA (github.com/OFA-Sys/OFA, utils/BPE/); put them "
            "in ./ofa_bpe, export OFA_BPE_DIR=<folder>, or pass tokenizer.path=<folder>",
        )
        if (directory / "encoder.json").exists() or (directory / "vocab.bpe").exists():
            text_model = ByteLevelBPE.from_ofa_layout(directory)
        elif (directory / "vocab.txt").exists():
            return cls.from_bert_files(directory, num_codes, num_bins)
        elif (directory / "dict.txt").exists():
            text_model = ByteLevelBPE.from_ofa_layout(directory)  # says which of its files is missing
        elif (directory / "vocab.json").exists() or (directory / "merges.txt").exists():
            text_model = ByteLevelBPE.from_hf_layout(directory)
        else:
            raise FileNotFoundError(
                f"no BPE files in {directory}: expected {', '.join(OFA_FILES)} (OFA layout) or "
                f"{', '.join(HF_FILES)} (HF/BART layout)"
            )
        return cls(text_model, num_codes, num_bins, source=spec)

    @classmethod
    def from_bert_files(
        cls,
        path_or_url: str | os.PathLike,
        num_codes: int = 8192,
        num_bins: int = 1000,
        cache_dir: str | os.PathLike | None = None,
    ) -> OFATokenizer:
        """Build from OFA-CN's Chinese vocabulary (OFA-Sys/OFA ``utils/BERT_CN_dict/``): a directory (or URL of
        one) with ``vocab.txt`` + ``dict.txt``, or a ModelScope Chinese OFA model's ``vocab.txt``. A URL is
        downloaded once into ``cache_dir`` (default ``~/.cache/ofa_lightning/bert_cn``)."""
        spec = os.fspath(path_or_url)
        directory = _local_folder(
            spec,
            cache_dir,
            (("OFA-CN", WORDPIECE_FILES), ("ModelScope", WORDPIECE_FILES[:1])),
            "WordPiece",
            "bert_cn",
            "OFA-CN's vocabulary (vocab.txt, dict.txt) comes with OFA (github.com/OFA-Sys/OFA, utils/BERT_CN_dict/); "
            "put it in ./ofa_bert_cn, export OFA_BERT_CN_DIR=<folder>, or pass tokenizer.path=<folder>",
        )
        return cls(BertWordPiece.from_folder(directory), num_codes, num_bins, source=spec)

    @classmethod
    def train_bpe(
        cls,
        texts: Iterable[str],
        bpe_vocab_size: int = 1000,
        num_codes: int = 8192,
        num_bins: int = 1000,
        min_frequency: int = 2,
    ) -> OFATokenizer:
        """Train a small byte-level BPE (``tokenizers`` ``BpeTrainer``) with OFA's layout.

        ``bpe_vocab_size`` counts the BPE entries only (256 byte symbols + merges; the trainer may stop early when
        no pair reaches ``min_frequency``); the 4 control tokens, ``<mask>``, codes and bins come on top.
        """
        text_model = train_byte_level_bpe(texts, bpe_vocab_size, min_frequency)
        return cls(
            text_model,
            num_codes,
            num_bins,
            source=f"trained(bpe_vocab_size={bpe_vocab_size}, min_frequency={min_frequency})",
        )

    # -- save / load -------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the text model's files (``vocab.json`` + ``merges.txt`` for BPE, ids = final indices;
        ``vocab.txt`` + ``dict.txt`` for WordPiece) and a ``ofa_tokenizer.json`` manifest into ``directory``;
        :meth:`load` restores an identical tokenizer. Returns the directory."""
        d = Path(directory).expanduser()
        d.mkdir(parents=True, exist_ok=True)
        manifest = {"format": _MANIFEST_FORMAT, "version": _MANIFEST_VERSION}
        if self._text.kind != ByteLevelBPE.kind:
            manifest["text_model"] = self._text.kind
        manifest.update(self._text.save_files(d, self.mask_id))
        manifest.update(
            {
                "num_text_tokens": self.num_text_tokens,
                "num_codes": self.num_codes,
                "num_bins": self.num_bins,
                "vocab_size": self.vocab_size,
                "source": self._source,
            }
        )
        with open(d / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump(manifest, f, ensure_ascii=False, indent=2)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> OFATokenizer:
        """Load a tokenizer written by :meth:`save`."""
        d = Path(directory).expanduser()
        mpath = d / MANIFEST_NAME
        if not mpath.is_file():
            raise FileNotFoundError(
                f"expected tokenizer manifest {MANIFEST_NAME} at {mpath} (written by OFATokenizer.save)"
            )
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
        if m.get("format") != _MANIFEST_FORMAT or m.get("version") != _MANIFEST_VERSION:
            raise ValueError(
                f"{mpath}: unsupported manifest (format={m.get('format')!r}, version={m.get('version')!r})"
            )
        kind = m.get("text_model", ByteLevelBPE.kind)
        if kind not in _TEXT_MODELS:
            raise ValueError(f"{mpath}: unknown text_model {kind!r} (known: {', '.join(_TEXT_MODELS)})")
        text_model = _TEXT_MODELS[kind].load_files(d, m)
        tok = cls(text_model, int(m["num_codes"]), int(m["num_bins"]), source=m.get("source", str(d)))
        if tok.num_text_tokens != m["num_text_tokens"] or tok.vocab_size != m["vocab_size"]:
            raise ValueError(
                f"{mpath}: files give {tok.num_text_tokens} text tokens / vocab {tok.vocab_size}, "
                f"manifest says {m['num_text_tokens']} / {m['vocab_size']}"
            )
        return tok

    # -- token <-> id --------------------------------------------------------------------------------------------
    def id_to_token(self, idx: int) -> str:
        """Token string of an id: ``<s>``.., the text token (e.g. ``'Ġwhat'``, ``'图'``, ``'##ing'``) or raw dict
        symbol, ``<mask>``, ``<code_i>``, ``<bin_i>``."""
        idx = self.check_id(idx)
        if self.is_text_id(idx):
            return self._text.symbol(idx)
        return self.special_token(idx)

    def token_to_id(self, token: str) -> int:
        """Id of a token string (inverse of :meth:`id_to_token`). Unknown strings give ``unk_id`` (like fairseq's
        ``Dictionary.index``); ``<bin_N>``/``<code_N>`` outside the configured range raise ``ValueError``."""
        special = self.special_id(token)
        if special is not None:
            return special
        idx = self._text.index(token)
        return self.unk_id if idx is None else idx

    # -- encode / decode -----------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Encode a string to ids, identical to OFA's (text model -> dict.txt index; literals as documented in
        :mod:`ofa_lightning.tokenizer.vocabulary`). ``add_bos``/``add_eos`` wrap the result in ``<s>`` ... ``</s>``."""
        return self.encode_batch([text], add_bos=add_bos, add_eos=add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        """:meth:`encode` for many strings (the text model runs batched in ``tokenizers``)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a sequence of strings, got a single str")
        split = [self.split_literals(t) for t in texts]
        encoded = self._text.encode_pieces([p for parts in split for p in parts if isinstance(p, str)])
        out: list[list[int]] = []
        k = 0
        for parts in split:
            ids: list[int] = [self.bos_id] if add_bos else []
            for p in parts:
                if isinstance(p, str):
                    ids.extend(encoded[k])
                    k += 1
                else:
                    ids.append(p)
            if add_eos:
                ids.append(self.eos_id)
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> string. Text runs are decoded together by the text model (BPE: byte-level, invalid UTF-8 ->
        U+FFFD; WordPiece: pieces joined, no spaces next to CJK characters); ``<mask>``, ``<code_i>``, ``<bin_i>``,
        ``<unk>`` and raw dict symbols are rendered as literals with one space before them (none at the start).
        ``skip_special`` drops ``<s>``, ``<pad>``, ``</s>``; ``<unk>`` is always kept because it marks lost text."""
        out: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                text = self._text.decode_run(run)
                if text:
                    # WordPiece text carries no spaces of its own: one separates it from a literal before it
                    out.append(" " + text if out and self._text.space_after_literal else text)
                run.clear()

        for i in as_int_list(ids):
            i = self.check_id(i)
            if self.is_text_id(i) and self._text.is_decodable(i):
                run.append(i)
                continue
            flush()
            if skip_special and i in (self.bos_id, self.pad_id, self.eos_id):
                continue
            lit = self.id_to_token(i)
            out.append(" " + lit if out else lit)  # out only holds non-empty strings
        flush()
        return "".join(out)
