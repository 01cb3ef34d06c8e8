"""OFA tokenizer: GPT-2 byte-level BPE mapped onto OFA's fairseq vocabulary, plus mask/code/bin tokens.

Vocabulary layout (identical to OFA's ``tasks/ofa_task.py`` dictionary)::

    0 <s>   1 <pad>   2 </s>   3 <unk>
    4 .. 4+T-1          T text symbols (for OFA: the 50,260 lines of dict.txt, in file order)
    4+T                 <mask>
    4+T+1 ..            <code_0> .. <code_{C-1}>   (VQGAN image codes)
    ..                  <bin_0>  .. <bin_{B-1}>    (quantised box coordinates)

For OFA's files (T=50,260, C=8,192, B=1,000) this gives ``<mask>`` = 50264, ``<code_0>`` = 50265,
``<bin_0>`` = 58457 and 59,457 ids in total.

Why the ids must equal fairseq's: OFA's released weights (embedding matrix and output projection) are indexed by
*fairseq dictionary indices*, not GPT-2 BPE ids. OFA encodes text with GPT-2 BPE, writes each GPT-2 id as a string,
and looks that string up in ``dict.txt`` (absent -> ``<unk>``). Any other numbering would silently scramble the
embeddings of converted checkpoints, so this module reproduces that mapping exactly (tests check it id-for-id
against an independent tiktoken implementation).

Literal special tokens inside a string
--------------------------------------
OFA never BPE-encodes ``<bin_i>``/``<code_i>``/``<mask>``: it joins them with spaces and looks each
whitespace-separated symbol up in the dictionary, and concatenates that with BPE-encoded text (e.g. the grounded
captioning prompt ``" what does the region describe? region:"`` + 4 bins, or a detection target
``<bin..> x4`` + BPE(``" person"``)). :meth:`OFATokenizer.encode` reproduces this with one rule:

* the literals ``<bin_N>``, ``<code_N>`` (N a decimal integer) and ``<mask>`` each become their single id;
* **all whitespace immediately before a literal is a separator and is dropped** (it produces no token);
* text after a literal keeps its leading whitespace, which BPE-encodes as usual (``"<bin_3> person"`` gives
  ``<bin_3>``, ``Ġperson``, exactly OFA's detection target).

So ``" what does the region describe? region: <bin_1> <bin_2>"`` encodes as
``BPE(" what does the region describe? region:") + [<bin_1>, <bin_2>]`` and ``"<bin_12> <bin_40>"`` as two ids.
``<bin_N>`` with N >= num_bins (or ``<code_N>`` with N >= num_codes) raises ``ValueError``, as does a
zero-padded number such as ``<bin_012>``. Anything else that merely looks like markup (``<s>``, ``</s>``,
``<bin_x>``, ``<|endoftext|>``) is ordinary text and is BPE-encoded, as in OFA.

:meth:`OFATokenizer.decode` is the inverse: literals are rendered with one space before them (none at the start of
the output), so ``decode(encode(x)) == x`` for strings whose literals are each preceded by exactly one space.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "OFATokenizer",
    "box_to_bins",
    "bins_to_box",
    "box_to_tokens",
    "tokens_to_box",
    "BOS_TOKEN",
    "PAD_TOKEN",
    "EOS_TOKEN",
    "UNK_TOKEN",
    "MASK_TOKEN",
]

BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<s>", "<pad>", "</s>", "<unk>"
MASK_TOKEN = "<mask>"
_CONTROL_TOKENS = (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0..3, fairseq order

MANIFEST_NAME = "ofa_tokenizer.json"
_MANIFEST_FORMAT = "ofa_lightning.OFATokenizer"
_MANIFEST_VERSION = 1

# OFA-style files (GPT-2 BPE + fairseq dictionary) and HF/BART-style files (ids already fairseq indices).
_OFA_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
_HF_FILES = ("vocab.json", "merges.txt")

# A literal special token plus the whitespace run before it (the separator, dropped). The number is matched
# loosely ([0-9]+) so that zero-padded or out-of-range literals raise instead of being silently BPE-encoded.
_LITERAL_RE = re.compile(r"\s*(<(bin|code)_([0-9]+)>|<mask>)")
_BIN_OR_CODE_TOKEN_RE = re.compile(r"^<(bin|code)_([0-9]+)>$")


# ---------------------------------------------------------------------------------------------------------------
# byte-level alphabet (GPT-2's bytes_to_unicode table: every byte gets a printable unicode character)
# ---------------------------------------------------------------------------------------------------------------
def _byte_level_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


# ---------------------------------------------------------------------------------------------------------------
# file readers
# ---------------------------------------------------------------------------------------------------------------
def _read_json_vocab(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping token strings to integer ids")
    return data


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError(f"{path}:{lineno}: expected a merge 'A B' (two tokens, one space), got {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


def _read_fairseq_dict(path: Path) -> list[str]:
    """Symbols of a fairseq ``dict.txt`` in file order (lines ``SYMBOL COUNT [#fairseq:overwrite]``)."""
    symbols: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            body = line
            if body.endswith(" #fairseq:overwrite"):
                body = body[: -len(" #fairseq:overwrite")]
            symbol, sep, count = body.rpartition(" ")
            if not sep or not symbol or not count.lstrip("-").isdigit():
                raise ValueError(
                    f"{path}:{lineno}: cannot parse dictionary line {line!r}; expected '<symbol> <count>' "
                    "(fairseq dict.txt format, e.g. '13 850314647')"
                )
            if symbol in seen:
                raise ValueError(f"{path}:{lineno}: duplicate symbol {symbol!r} (first seen on line {seen[symbol]})")
            seen[symbol] = lineno
            symbols.append(symbol)
    if not symbols:
        raise ValueError(f"{path}: dictionary is empty")
    return symbols


def _require(directory: Path, names: Sequence[str], layout: str) -> list[Path]:
    paths = [directory / n for n in names]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"expected {p.name} at {p} ({layout} layout needs {', '.join(names)} in {directory})"
            )
    return paths


# ---------------------------------------------------------------------------------------------------------------
# URL download (cached)
# ---------------------------------------------------------------------------------------------------------------
def _default_cache_root() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "ofa_lightning" / "bpe"


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as resp:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(tmp, dest)  # atomic: concurrent processes never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_url_dir(url: str, cache_dir: str | os.PathLike | None) -> Path:
    """Download a remote BPE directory once into ``<cache>/<sha256(url)[:16]>/`` and return the local path.

    Tries the OFA layout (encoder.json, vocab.bpe, dict.txt) first, then the HF/BART layout (vocab.json,
    merges.txt). Files already in the cache are not downloaded again.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_root()
    local = root / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    base = url if url.endswith("/") else url + "/"
    errors: list[str] = []
    for names in (_OFA_FILES, _HF_FILES):
        if all((local / n).is_file() for n in names):
            return local
        try:
            for n in names:
                if not (local / n).is_file():
                    _download(urllib.parse.urljoin(base, n), local / n)
            return local
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise ConnectionError(f"could not download BPE files from {url}: HTTP {e.code} for {e.filename}") from e
            errors.append(f"{e.filename}: HTTP 404")
        except urllib.error.URLError as e:
            raise ConnectionError(f"could not download BPE files from {url}: {e.reason}") from e
    raise FileNotFoundError(
        f"no BPE files found at {url}: expected {', '.join(_OFA_FILES)} (OFA layout) or "
        f"{', '.join(_HF_FILES)} (HF/BART layout) under it ({'; '.join(errors)})"
    )


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------------------------
# the tokenizer
# ---------------------------------------------------------------------------------------------------------------
class OFATokenizer:
    """Byte-level BPE tokenizer with OFA's vocabulary layout (see the module docstring).

    Build it with :meth:`from_ofa_files` (OFA/BART BPE files, directory or URL), :meth:`train_bpe` (small
    vocabulary for demos) or :meth:`load` (a directory written by :meth:`save`). The BPE itself runs in the
    ``tokenizers`` library; this class maps its internal ids to the final (fairseq) indices and handles the
    literal ``<bin_i>``/``<code_i>``/``<mask>`` tokens.
    """

    def __init__(
        self,
        token_to_index: dict[str, int],
        merges: Sequence[tuple[str, str]],
        num_text: int,
        num_codes: int = 8192,
        num_bins: int = 1000,
        raw_symbols: dict[int, str] | None = None,
        source: str = "",
    ) -> None:
        """Low-level constructor; prefer the ``from_*``/``train_bpe``/``load`` class methods.

        Args:
            token_to_index: byte-level BPE token string -> final index in ``[4, 4 + num_text)``. BPE tokens that
                the merges can produce but that are missing here encode to ``<unk>`` (OFA: GPT-2 id not in dict.txt).
            merges: BPE merges in priority order.
            num_text: number of text symbols T (indices 4..4+T-1).
            num_codes, num_bins: sizes of the ``<code_i>`` and ``<bin_i>`` blocks.
            raw_symbols: text indices that are not BPE tokens (e.g. fairseq's ``madeupword0000``); they are
                never produced by :meth:`encode` and are decoded as the symbol itself.
            source: free-form description, stored in the manifest.
        """
        for name, v in (("num_text", num_text), ("num_codes", num_codes), ("num_bins", num_bins)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        raw_symbols = dict(raw_symbols or {})
        self._num_text = num_text
        self._num_codes = num_codes
        self._num_bins = num_bins
        self._source = source

        # Every text index must be covered exactly once, by a BPE token or a raw symbol.
        owner: dict[int, str] = {}
        for tok, idx in token_to_index.items():
            if not isinstance(idx, int) or not 4 <= idx < 4 + num_text:
                raise ValueError(f"BPE token {tok!r} has index {idx!r}, outside the text range [4, {4 + num_text})")
            if idx in owner:
                raise ValueError(f"index {idx} is assigned to both {owner[idx]!r} and {tok!r}")
            owner[idx] = tok
        for idx, sym in raw_symbols.items():
            if not isinstance(idx, int) or not 4 <= idx < 4 + num_text:
                raise ValueError(f"symbol {sym!r} has index {idx!r}, outside the text range [4, {4 + num_text})")
            if idx in owner:
                raise ValueError(f"index {idx} is assigned to both {owner[idx]!r} and {sym!r}")
            owner[idx] = sym
        if len(owner) != num_text:
            missing = sorted(set(range(4, 4 + num_text)) - set(owner))
            raise ValueError(
                f"{len(missing)} text indices have no token (first: {missing[:5]}); ids must be contiguous from 4"
            )

        # Internal vocabulary for the tokenizers BPE model: byte alphabet + indexed tokens + every merge
        # operand/result (tokenizers requires all of them to exist). Internal ids are arbitrary; only the
        # merges' order sets BPE priorities. _internal_to_id maps them to final indices (unk when unindexed).
        internal: dict[str, int] = {}

        def _add(t: str) -> None:
            if t not in internal:
                internal[t] = len(internal)

        for t in _byte_level_alphabet():
            _add(t)
        for t in token_to_index:
            _add(t)
        merges = [(str(a), str(b)) for a, b in merges]
        for a, b in merges:
            _add(a)
            _add(b)
            _add(a + b)
        self._merges = merges
        self._token_to_index = dict(token_to_index)
        self._raw_symbols = raw_symbols
        self._internal_to_id = [self.unk_id] * len(internal)
        for t, i in internal.items():
            self._internal_to_id[i] = token_to_index.get(t, self.unk_id)
        self._id_to_internal = {token_to_index[t]: i for t, i in internal.items() if t in token_to_index}
        self._index_to_text = {idx: sym for idx, sym in owner.items()}
        self._raw_symbol_to_index = {sym: idx for idx, sym in raw_symbols.items()}

        model = models.BPE(vocab=internal, merges=merges, fuse_unk=False)
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok

    # -- layout ------------------------------------------------------------------------------------------------
    bos_id = 0
    pad_id = 1
    eos_id = 2
    unk_id = 3

    @property
    def num_text_tokens(self) -> int:
        """Number of text symbols T between the 4 control tokens and ``<mask>``."""
        return self._num_text

    @property
    def mask_id(self) -> int:
        return 4 + self._num_text

    @property
    def code_offset(self) -> int:
        """Id of ``<code_0>``."""
        return self.mask_id + 1

    @property
    def bin_offset(self) -> int:
        """Id of ``<bin_0>``."""
        return self.code_offset + self._num_codes

    @property
    def num_codes(self) -> int:
        return self._num_codes

    @property
    def num_bins(self) -> int:
        return self._num_bins

    @property
    def code_range(self) -> tuple[int, int]:
        """Half-open ``(start, end)`` id range of the code tokens (OFA's ``--constraint-range``)."""
        return (self.code_offset, self.code_offset + self._num_codes)

    @property
    def bin_range(self) -> tuple[int, int]:
        """Half-open ``(start, end)`` id range of the bin tokens."""
        return (self.bin_offset, self.bin_offset + self._num_bins)

    @property
    def vocab_size(self) -> int:
        return self.bin_offset + self._num_bins

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def source(self) -> str:
        return self._source

    def __repr__(self) -> str:
        return (
            f"OFATokenizer(vocab_size={self.vocab_size}, text={self._num_text}, codes={self._num_codes}, "
            f"bins={self._num_bins}, source={self._source!r})"
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
        """Build from OFA's BPE files.

        ``path_or_url`` is a directory (or an http(s) URL of one) holding either

        * ``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` (OFA/fairseq: GPT-2 BPE id -> dict.txt line index + 4), or
        * ``vocab.json`` + ``merges.txt`` whose ids already are fairseq indices (BART/HF style: ``<s>``..``<unk>``
          at 0..3, text tokens contiguous from 4, optional ``<mask>`` right after them).

        The OFA layout wins if both are present. A URL is downloaded once into
        ``cache_dir`` (default ``~/.cache/ofa_lightning/bpe``) under ``<sha256(url)[:16]>/``.
        """
        spec = os.fspath(path_or_url)
        if _is_url(spec):
            directory = _fetch_url_dir(spec, cache_dir)
        else:
            directory = Path(spec).expanduser()
            if not directory.exists():
                raise FileNotFoundError(
                    f"BPE directory {directory} does not exist: OFA's BPE files ({', '.join(_OFA_FILES)}) come with "
                    "OFA (github.com/OFA-Sys/OFA, utils/BPE/); put them in ./ofa_bpe, export OFA_BPE_DIR=<folder>, "
                    "or pass tokenizer.path=<folder>"
                )
            if not directory.is_dir():
                raise FileNotFoundError(f"{directory} is not a directory; pass the directory holding the BPE files")
        if (
            (directory / "dict.txt").exists()
            or (directory / "encoder.json").exists()
            or (directory / "vocab.bpe").exists()
        ):
            return cls._from_ofa_layout(directory, num_codes, num_bins, source=spec)
        if (directory / "vocab.json").exists() or (directory / "merges.txt").exists():
            return cls._from_hf_layout(directory, num_codes, num_bins, source=spec)
        raise FileNotFoundError(
            f"no BPE files in {directory}: expected {', '.join(_OFA_FILES)} (OFA layout) or "
            f"{', '.join(_HF_FILES)} (HF/BART layout)"
        )

    @classmethod
    def _from_ofa_layout(cls, directory: Path, num_codes: int, num_bins: int, source: str) -> OFATokenizer:
        enc_path, bpe_path, dict_path = _require(directory, _OFA_FILES, "OFA")
        encoder = _read_json_vocab(enc_path)  # GPT-2 token string -> GPT-2 id
        merges = _read_merges(bpe_path)
        symbols = _read_fairseq_dict(dict_path)
        gpt2_token = {i: t for t, i in encoder.items()}
        # fairseq looks up str(gpt2_id) in dict.txt; a symbol that is no GPT-2 id (madeupword...) is a raw symbol.
        token_to_index: dict[str, int] = {}
        raw: dict[int, str] = {}
        for line_no, sym in enumerate(symbols):
            idx = 4 + line_no
            if sym.isascii() and sym.isdigit() and str(int(sym)) == sym and int(sym) in gpt2_token:
                token_to_index[gpt2_token[int(sym)]] = idx
            else:
                raw[idx] = sym
        return cls(token_to_index, merges, len(symbols), num_codes, num_bins, raw_symbols=raw, source=source)

    @classmethod
    def _from_hf_layout(
        cls,
        directory: Path,
        num_codes: int,
        num_bins: int,
        source: str,
        raw_symbols: dict[int, str] | None = None,
    ) -> OFATokenizer:
        vocab_path, merges_path = _require(directory, _HF_FILES, "HF/BART")
        vocab = _read_json_vocab(vocab_path)
        merges = _read_merges(merges_path)
        raw_symbols = dict(raw_symbols or {})
        text: dict[str, int] = {}
        specials: dict[str, int] = {}
        for tok, idx in vocab.items():
            if tok in _CONTROL_TOKENS or tok == MASK_TOKEN:
                specials[tok] = idx
            elif _BIN_OR_CODE_TOKEN_RE.match(tok):
                continue  # sizes come from num_codes/num_bins, positions from the layout
            else:
                text[tok] = idx
        for want, tok in enumerate(_CONTROL_TOKENS):
            if tok in specials and specials[tok] != want:
                raise ValueError(
                    f"{vocab_path}: {tok} has id {specials[tok]}, expected {want} "
                    "(ids must be fairseq indices: <s>=0, <pad>=1, </s>=2, <unk>=3)"
                )
        num_text = len(text) + len(raw_symbols)
        lo = min(list(text.values()) + list(raw_symbols), default=4)
        if lo != 4:
            raise ValueError(
                f"{vocab_path}: text token ids start at {lo}, expected 4. This loader needs ids that already equal "
                "fairseq indices (BART style); for a plain GPT-2 vocabulary use encoder.json + vocab.bpe + dict.txt"
            )
        if MASK_TOKEN in specials and specials[MASK_TOKEN] != 4 + num_text:
            raise ValueError(
                f"{vocab_path}: {MASK_TOKEN} has id {specials[MASK_TOKEN]}, expected {4 + num_text} "
                "(right after the text tokens)"
            )
        return cls(text, merges, num_text, num_codes, num_bins, raw_symbols=raw_symbols, source=source)

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
        if bpe_vocab_size < 256:
            raise ValueError(f"bpe_vocab_size must be >= 256 (the byte alphabet), got {bpe_vocab_size}")
        tok = Tokenizer(models.BPE(fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=bpe_vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        model = json.loads(tok.to_str())["model"]
        vocab: dict[str, int] = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise RuntimeError("tokenizers returned a non-contiguous trained vocabulary")
        return cls(
            {t: 4 + i for t, i in vocab.items()},
            merges,
            len(vocab),
            num_codes,
            num_bins,
            source=f"trained(bpe_vocab_size={bpe_vocab_size}, min_frequency={min_frequency})",
        )

    # -- save / load -------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``vocab.json`` + ``merges.txt`` (BART style, ids = final indices) and a ``ofa_tokenizer.json``
        manifest into ``directory``; :meth:`load` restores an identical tokenizer. Returns the directory."""
        d = Path(directory).expanduser()
        d.mkdir(parents=True, exist_ok=True)
        vocab: dict[str, int] = {t: i for i, t in enumerate(_CONTROL_TOKENS)}
        vocab.update(self._token_to_index)
        extra_raw: dict[int, str] = {}
        for idx, sym in self._raw_symbols.items():
            if sym in vocab:  # would clash with a BPE token of the same spelling: keep it in the manifest only
                extra_raw[idx] = sym
            else:
                vocab[sym] = idx
        vocab[MASK_TOKEN] = self.mask_id
        vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        with open(d / "vocab.json", "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(d / "merges.txt", "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self._merges:
                f.write(f"{a} {b}\n")
        manifest = {
            "format": _MANIFEST_FORMAT,
            "version": _MANIFEST_VERSION,
            "vocab_file": "vocab.json",
            "merges_file": "merges.txt",
            "num_text_tokens": self._num_text,
            "num_codes": self._num_codes,
            "num_bins": self._num_bins,
            "vocab_size": self.vocab_size,
            "raw_symbols": {str(k): v for k, v in sorted(extra_raw.items())},
            "source": self._source,
        }
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
        if m.get("vocab_file") != "vocab.json" or m.get("merges_file") != "merges.txt":
            raise ValueError(f"{mpath}: unexpected file names {m.get('vocab_file')!r}, {m.get('merges_file')!r}")
        raw = {int(k): v for k, v in m.get("raw_symbols", {}).items()}
        tok = cls._from_hf_layout(
            d, int(m["num_codes"]), int(m["num_bins"]), source=m.get("source", str(d)), raw_symbols=raw
        )
        if tok.num_text_tokens != m["num_text_tokens"] or tok.vocab_size != m["vocab_size"]:
            raise ValueError(
                f"{mpath}: files give {tok.num_text_tokens} text tokens / vocab {tok.vocab_size}, "
                f"manifest says {m['num_text_tokens']} / {m['vocab_size']}"
            )
        return tok

    # -- token <-> id --------------------------------------------------------------------------------------------
    def id_to_token(self, idx: int) -> str:
        """Token string of an id: ``<s>``.., the BPE token (e.g. ``'Ġwhat'``) or raw dict symbol, ``<mask>``,
        ``<code_i>``, ``<bin_i>``."""
        idx = self._check_id(idx)
        if idx < 4:
            return _CONTROL_TOKENS[idx]
        if idx < self.mask_id:
            return self._index_to_text[idx]
        if idx == self.mask_id:
            return MASK_TOKEN
        if idx < self.bin_offset:
            return f"<code_{idx - self.code_offset}>"
        return f"<bin_{idx - self.bin_offset}>"

    def token_to_id(self, token: str) -> int:
        """Id of a token string (inverse of :meth:`id_to_token`). Unknown strings give ``unk_id`` (like fairseq's
        ``Dictionary.index``); ``<bin_N>``/``<code_N>`` outside the configured range raise ``ValueError``."""
        if token in _CONTROL_TOKENS:
            return _CONTROL_TOKENS.index(token)
        if token == MASK_TOKEN:
            return self.mask_id
        m = _BIN_OR_CODE_TOKEN_RE.match(token)
        if m:
            return self._literal_id(m.group(1), m.group(2), token)
        if token in self._token_to_index:
            return self._token_to_index[token]
        return self._raw_symbol_to_index.get(token, self.unk_id)

    def bins_to_ids(self, bins: Iterable[int]) -> list[int]:
        """Bin numbers (0..num_bins-1) -> token ids."""
        out = []
        for b in _as_int_list(bins):
            if not 0 <= b < self._num_bins:
                raise ValueError(f"bin {b} out of range [0, {self._num_bins})")
            out.append(self.bin_offset + b)
        return out

    def ids_to_bins(self, ids: Iterable[int]) -> list[int]:
        """Token ids -> bin numbers; ids outside :attr:`bin_range` raise ``ValueError``."""
        lo, hi = self.bin_range
        out = []
        for i in _as_int_list(ids):
            if not lo <= i < hi:
                raise ValueError(f"id {i} is not a bin token (bin ids are [{lo}, {hi}))")
            out.append(i - lo)
        return out

    def codes_to_ids(self, codes: Iterable[int]) -> list[int]:
        """VQGAN codes (0..num_codes-1) -> token ids (OFA: code + len(dict) - num_codes - num_bins)."""
        out = []
        for c in _as_int_list(codes):
            if not 0 <= c < self._num_codes:
                raise ValueError(f"code {c} out of range [0, {self._num_codes})")
            out.append(self.code_offset + c)
        return out

    def ids_to_codes(self, ids: Iterable[int]) -> list[int]:
        """Token ids -> VQGAN codes; ids outside :attr:`code_range` raise ``ValueError``."""
        lo, hi = self.code_range
        out = []
        for i in _as_int_list(ids):
            if not lo <= i < hi:
                raise ValueError(f"id {i} is not a code token (code ids are [{lo}, {hi}))")
            out.append(i - lo)
        return out

    # -- encode / decode -----------------------------------------------------------------------------------------
    def _literal_id(self, kind: str, number: str, literal: str) -> int:
        n = int(number)
        if number != str(n):
            raise ValueError(f"malformed special token {literal!r}: write the number without leading zeros")
        if kind == "bin":
            if n >= self._num_bins:
                raise ValueError(
                    f"unknown bin token {literal!r}: this tokenizer has {self._num_bins} bins "
                    f"(<bin_0>..<bin_{self._num_bins - 1}>)"
                )
            return self.bin_offset + n
        if n >= self._num_codes:
            raise ValueError(f"unknown code token {literal!r}: this tokenizer has {self._num_codes} codes")
        return self.code_offset + n

    def _split(self, text: str) -> list[str | int]:
        """Split into BPE text pieces (str) and literal-token ids (int), dropping whitespace before literals."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        parts: list[str | int] = []
        pos = 0
        for m in _LITERAL_RE.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            if m.group(1) == MASK_TOKEN:
                parts.append(self.mask_id)
            else:
                parts.append(self._literal_id(m.group(2), m.group(3), m.group(1)))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Encode a string to ids, identical to OFA's (GPT-2 BPE -> dict.txt index; literals as documented in
        the module docstring). ``add_bos``/``add_eos`` wrap the result in ``<s>`` ... ``</s>``."""
        return self.encode_batch([text], add_bos=add_bos, add_eos=add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[list[int]]:
        """:meth:`encode` for many strings (the BPE runs batched in ``tokenizers``)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a sequence of strings, got a single str")
        split = [self._split(t) for t in texts]
        pieces = [p for parts in split for p in parts if isinstance(p, str)]
        if len(pieces) == 1:
            encoded = [self._tok.encode(pieces[0], add_special_tokens=False).ids]
        elif pieces:
            encoded = [e.ids for e in self._tok.encode_batch(pieces, add_special_tokens=False)]
        else:
            encoded = []
        table = self._internal_to_id
        out: list[list[int]] = []
        k = 0
        for parts in split:
            ids: list[int] = [self.bos_id] if add_bos else []
            for p in parts:
                if isinstance(p, str):
                    ids.extend(table[i] for i in encoded[k])
                    k += 1
                else:
                    ids.append(p)
            if add_eos:
                ids.append(self.eos_id)
            out.append(ids)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Ids -> string. Text runs are byte-level decoded together (invalid UTF-8 -> U+FFFD); ``<mask>``,
        ``<code_i>``, ``<bin_i>``, ``<unk>`` and raw dict symbols are rendered as literals with one space before
        them (none at the start). ``skip_special`` drops ``<s>``, ``<pad>``, ``</s>``; ``<unk>`` is always kept
        because it marks lost text."""
        out: list[str] = []
        run: list[int] = []
        text_hi = self.mask_id

        def flush() -> None:
            if run:
                text = self._tok.decode(run, skip_special_tokens=False)
                if text:
                    out.append(text)
                run.clear()

        for i in _as_int_list(ids):
            i = self._check_id(i)
            if 4 <= i < text_hi and i in self._id_to_internal:
                run.append(self._id_to_internal[i])
                continue
            flush()
            if skip_special and i in (self.bos_id, self.pad_id, self.eos_id):
                continue
            lit = self.id_to_token(i)
            out.append(" " + lit if out else lit)  # out only holds non-empty strings
        flush()
        return "".join(out)

    def _check_id(self, idx: Any) -> int:
        i = int(idx)
        if i != idx or not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {idx!r} out of range [0, {self.vocab_size})")
        return i


def _as_int_list(xs: Iterable[Any]) -> list[int]:
    if hasattr(xs, "tolist"):  # torch tensors / numpy arrays
        xs = xs.tolist()
    if isinstance(xs, (int, str)):
        raise TypeError(f"expected a sequence of ints, got {type(xs).__name__}")
    out = []
    for x in xs:
        if isinstance(x, bool) or int(x) != x:
            raise ValueError(f"expected integer ids/numbers, got {x!r}")
        out.append(int(x))
    return out


# ---------------------------------------------------------------------------------------------------------------
# box quantisation (OFA-Sys/OFA data/mm_data/refcoco_dataset.py):
# bin = round(c / max_image_size * (num_bins - 1)), order x0 y0 x1 y1
# ---------------------------------------------------------------------------------------------------------------
def _check_box(box_xyxy: Any) -> list[float]:
    if hasattr(box_xyxy, "tolist"):
        box_xyxy = box_xyxy.tolist()
    try:
        vals = [float(v) for v in box_xyxy]
    except (TypeError, ValueError) as e:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {box_xyxy!r}") from e
    if len(vals) != 4:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {len(vals)}: {box_xyxy!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box has a NaN/infinite coordinate: {box_xyxy!r}")
    x0, y0, x1, y1 = vals
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must satisfy x0 <= x1 and y0 <= y1 (xyxy order), got {box_xyxy!r}")
    return vals


def _check_quant_args(max_image_size: float, num_bins: int) -> None:
    if not (isinstance(num_bins, int) and num_bins >= 2):
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    if not (max_image_size > 0 and math.isfinite(max_image_size)):
        raise ValueError(f"max_image_size must be a positive number, got {max_image_size!r}")


def box_to_bins(box_xyxy: Sequence[float], max_image_size: float = 512, num_bins: int = 1000) -> list[int]:
    """Quantise a pixel box (x0, y0, x1, y1) to 4 bin numbers: ``round(c / max_image_size * (num_bins - 1))``,
    clamped to ``[0, num_bins - 1]``. Rounding is half-to-even like OFA's ``torch.round`` (computed in float64;
    OFA uses float32, which can differ only for values within float32 precision of a .5 boundary)."""
    _check_quant_args(max_image_size, num_bins)
    vals = _check_box(box_xyxy)
    return [min(max(int(round(v / max_image_size * (num_bins - 1))), 0), num_bins - 1) for v in vals]


def bins_to_box(
    bins: Sequence[int],
    max_image_size: float = 512,
    num_bins: int = 1000,
    w_ratio: float = 1.0,
    h_ratio: float = 1.0,
) -> list[float]:
    """Inverse of :func:`box_to_bins`: ``c = bin / (num_bins - 1) * max_image_size / ratio`` (``w_ratio`` for x,
    ``h_ratio`` for y: the resize ratio of the transformed image, to map back to original pixels)."""
    _check_quant_args(max_image_size, num_bins)
    if not (w_ratio > 0 and h_ratio > 0):
        raise ValueError(f"w_ratio and h_ratio must be positive, got {w_ratio!r}, {h_ratio!r}")
    b = _as_int_list(bins)
    if len(b) != 4:
        raise ValueError(f"expected 4 bins (x0, y0, x1, y1), got {len(b)}: {bins!r}")
    for v in b:
        if not 0 <= v < num_bins:
            raise ValueError(f"bin {v} out of range [0, {num_bins})")
    scale = max_image_size / (num_bins - 1)
    return [b[0] * scale / w_ratio, b[1] * scale / h_ratio, b[2] * scale / w_ratio, b[3] * scale / h_ratio]


def box_to_tokens(box_xyxy: Sequence[float], max_image_size: float = 512, num_bins: int = 1000) -> str:
    """Box -> ``"<bin_a> <bin_b> <bin_c> <bin_d>"`` (OFA's region string)."""
    return " ".join(f"<bin_{b}>" for b in box_to_bins(box_xyxy, max_image_size, num_bins))


_BIN_TOKEN_RE = re.compile(r"^<bin_(0|[1-9][0-9]*)>$")


def tokens_to_box(
    tokens: str | Sequence[str],
    max_image_size: float = 512,
    num_bins: int = 1000,
    w_ratio: float = 1.0,
    h_ratio: float = 1.0,
) -> list[float]:
    """``"<bin_a> <bin_b> <bin_c> <bin_d>"`` (or a list of 4 such strings) -> pixel box, see :func:`bins_to_box`."""
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    if len(toks) != 4:
        raise ValueError(f"expected 4 bin tokens '<bin_a> <bin_b> <bin_c> <bin_d>', got {len(toks)}: {tokens!r}")
    bins = []
    for t in toks:
        m = _BIN_TOKEN_RE.match(str(t))
        if not m:
            raise ValueError(f"not a bin token: {t!r} (expected '<bin_N>')")
        bins.append(int(m.group(1)))
    return bins_to_box(bins, max_image_size, num_bins, w_ratio, h_ratio)
