"""Java-free re-implementation of pycocoevalcap's caption tokenization.

pycocoevalcap's ``PTBTokenizer`` writes the captions one per line to a file, runs Stanford CoreNLP 3.4.1's
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` on it and drops the tokens
``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;``. This module runs the same lexer rules
(:mod:`.ptb_rules`: longest match, earliest rule on ties, trailing contexts, the actions' normalisations
such as ``"`` -> `````/``''``, ``(`` -> ``-LRB-``, ``&amp;`` -> ``&``, soft-hyphen removal, the
``cannot`` -> ``can not`` splits, the acronym/abbreviation period rules), lower-cases each token like
Java's ``toLowerCase(Locale.ENGLISH)`` and removes the same punctuation tokens. Note that ``-lowerCase``
turns ``-LRB-`` into ``-lrb-`` *before* that removal, so pycocoevalcap keeps parentheses as ``-lrb-`` /
``-rrb-`` tokens; so does this module.

:func:`ptb_tokenize_lines` is the exact batch equivalent (all captions in one input, in order, the last
one at end of input). The lexer looks past the end of a line in a few rules, so in pycocoevalcap the last
token of a caption can depend on the caption written after it: a single-letter acronym (``"... letter
A."``) before a line starting with ``A``/``The``/``He``/... and ``fig.``/``no.``/... before a line starting
with a digit. :func:`ptb_tokenize` tokenizes one caption as a line followed by a line break (what
pycocoevalcap does for every caption but the last of its file) and by nothing else.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import regex

from .ptb_rules import ABBREV1, ABBREV3, ABBREV4, RULES

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "ptb_tokenize_lines"]

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"])  # fmt: skip

# one POSIX (leftmost-longest) pattern per rule: the main part in group "m", then the trailing context
_RULE_PATTERNS = [
    regex.compile(f"(?P<m>{main})" + (f"(?:{tail})" if tail else ""), regex.POSIX) for _, main, tail in RULES
]
_CANDIDATES: dict[str, list[int]] = {}
_NEWLINE_TOKEN = "\n"
# Fast path: a plain ASCII word, optionally with one ". , ; : ! ?" glued on, before a space, tab or line
# break. No rule extends such a word or splits it, except the assimilations and abbreviations checked below
# (URLs and e-mail addresses may contain other space characters, hence only these four).
_SIMPLE_WORD = re.compile(r"([A-Za-z]+)([.,;:!?]?)(?=[ \t\n\f\r]|\Z)")
_SPLIT_WORDS = {"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"}
_ABBREVIATION = regex.compile(f"{ABBREV1}|{ABBREV4}\\.|{ABBREV3}|(?:(?i:pt)[eyEY]|(?i:co))\\.", regex.POSIX)
# Java sees a character outside the BMP as two surrogate chars: in no letter or digit class, deleted when
# alone, kept inside URL/e-mail/SGML tokens. A private-use BMP stand-in behaves the same in every rule.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

_LEFT_SINGLE = re.compile("[\u0091\u2018\u201b\u2039]")
_RIGHT_SINGLE = re.compile("[\u0092\u2019\u203a]")
_LEFT_DOUBLE = re.compile("[\u0093\u201c\u00ab]")
_RIGHT_DOUBLE = re.compile("[\u0094\u201d\u00bb]")
_SINGLE = re.compile("&apos;|'")
_DOUBLE = re.compile('"|&quot;')
_AMP = re.compile("(?i:&amp;)")
_FRACTIONS = str.maketrans({"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"})
_CURRENCY = str.maketrans(
    {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
)
_PARENS = str.maketrans({"(": "-LRB-", ")": "-RRB-"})


def _quotes(tok: str, left: bool) -> str:
    """PTBLexer's LaTeX quote normalisation."""
    tok = _SINGLE.sub("`" if left else "'", tok)
    tok = _DOUBLE.sub("``" if left else "''", tok)
    tok = _LEFT_SINGLE.sub("`", tok)
    tok = _RIGHT_SINGLE.sub("'", tok)
    tok = _LEFT_DOUBLE.sub("``", tok)
    return _RIGHT_DOUBLE.sub("''", tok)


def _soft(tok: str) -> str:
    out = tok.replace("\u00ad", "")
    return out if out else "-"


def _candidates(ch: str) -> list[int]:
    """Indices of the rules that can match a text starting with ``ch`` (cached per character)."""
    idx = _CANDIDATES.get(ch)
    if idx is None:
        idx = _CANDIDATES[ch] = [i for i, p in enumerate(_RULE_PATTERNS) if p.fullmatch(ch, partial=True)]
    return idx


def _match(text: str, pos: int) -> tuple[str, str]:
    """(action, matched text without its trailing context) of the winning rule at ``pos``.

    JFlex semantics: the longest match of ``pattern + trailing context`` over all rules; on a tie the rule
    written first.
    """
    best_len, best = -1, None
    for i in _candidates(text[pos]):
        m = _RULE_PATTERNS[i].match(text, pos)
        if m is not None and m.end() - pos > best_len:
            best_len, best = m.end() - pos, (RULES[i][0], m.group("m"))
    if best is None:  # cannot happen: the last rule matches any character but "\n", which NEWLINE matches
        raise RuntimeError(f"PTB lexer: no rule matches at {pos} in {text!r}")
    return best


def _is_abbreviation(word: str) -> bool:
    m = _ABBREVIATION.match(word + ".")
    return m is not None and m.end() == len(word) + 1


def _lex(text: str) -> Iterable[str]:
    """Yield PTBLexer tokens (before lower-casing); ``"\\n"`` marks a line break."""
    pos, n = 0, len(text)
    while pos < n:
        simple = _SIMPLE_WORD.match(text, pos)
        if simple is not None:
            word, punct = simple.groups()
            if word.lower() not in _SPLIT_WORDS and (punct != "." or not _is_abbreviation(word)):
                yield word
                if punct:
                    yield punct
                pos = simple.end()
                continue
        action, tok = _match(text, pos)
        advance = len(tok)
        if action == "get":
            out = tok
        elif action == "skip":
            out = None
        elif action == "newline":
            out = _NEWLINE_TOKEN
        elif action == "soft":
            out = _soft(tok)
        elif action in ("push2", "push3"):
            advance -= int(action[-1])
            out = tok[:advance]
        elif action in ("sgml", "nbsp"):
            out = tok.replace(" ", "\u00a0")
        elif action == "phone":
            out = tok.replace(" ", "\u00a0").translate(_PARENS)
        elif action == "parens":
            out = tok.translate(_PARENS)
        elif action == "mdash":
            out = "--"
        elif action == "amp":
            out = _AMP.sub("&", tok)
        elif action == "quote_left":
            out = _quotes(tok, True)
        elif action == "quote_right":
            out = _quotes(tok, False)
        elif action == "fraction":
            out = tok.translate(_FRACTIONS)
        elif action == "currency":
            out = tok.translate(_CURRENCY)
        elif action == "acronym":  # "X." -> "X" then "."; "U.S." -> "U.S." then "."
            out = tok[:-1] if len(tok) == 2 else tok
            advance -= 1
        elif action == "redup":  # abbreviation at a sentence end: "etc." then "."
            out = tok
            advance -= 1
        elif action == "trim":
            out = tok
        elif action == "lt":
            out = "<"
        elif action == "gt":
            out = ">"
        elif action == "hyphens":
            out = "--" if 3 <= len(tok) <= 4 else tok
        elif action == "ellipsis":
            out = "..."
        else:  # the bracket rules name their token
            out = action
        if out is not None:
            yield out
        pos += advance


_MID_WORD = {"\u00ad", "\u2027", '"', "'", "."}


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or unicodedata.category(ch) in ("Mn", "Mc", "Me")


def _mid_word(tok: str, k: int) -> bool:
    """Java's word BreakIterator keeps a dash, quote or period between two letters inside the word."""
    ch = tok[k]
    mid = ch in _MID_WORD or unicodedata.category(ch) == "Pd"
    return mid and 0 < k < len(tok) - 1 and tok[k - 1].isalpha() and tok[k + 1].isalpha()


def _java_lower(tok: str) -> str:
    """``String.toLowerCase(Locale.ENGLISH)``: as ``str.lower`` but with Java's final-sigma rule (a capital
    sigma is final when a cased letter precedes it and none follows it in the same word, words as Java's
    BreakIterator sees them)."""
    if "\u03a3" not in tok:
        return tok.lower()
    out = []
    for i, ch in enumerate(tok):
        if ch != "\u03a3":
            out.append(ch.lower())
            continue
        lo = i
        while lo > 0 and (_word_char(tok[lo - 1]) or _mid_word(tok, lo - 1)):
            lo -= 1
        hi = i + 1
        while hi < len(tok) and (_word_char(tok[hi]) or _mid_word(tok, hi)):
            hi += 1
        before = any(c.islower() or c.isupper() or c.istitle() for c in tok[lo:i])
        after = any(c.islower() or c.isupper() or c.istitle() for c in tok[i + 1 : hi])
        out.append("\u03c2" if before and not after else "\u03c3")
    return "".join(out)


def _java_output(tokens: Iterable[str]) -> str:
    """The text PTBTokenizer ``-preserveLines -lowerCase`` writes: tokens joined by spaces, lines by "\\n"."""
    parts: list[str] = []
    begin_line = True
    for tok in tokens:
        if tok == _NEWLINE_TOKEN:
            parts.append("\n")
            begin_line = True
        else:
            if not begin_line:
                parts.append(" ")
            parts.append(_java_lower(tok))
            begin_line = False
    return "".join(parts)


def _finish(line: str) -> str:
    """pycocoevalcap's post-processing of one output line: ``rstrip``, ``split(" ")``, punctuation removal."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def _lex_text(text: str) -> Iterable[str]:
    """:func:`_lex` with characters outside the BMP swapped for private-use stand-ins and back."""
    astral = sorted(set(_ASTRAL.findall(text)))
    if not astral:
        yield from _lex(text)
        return
    free = (chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
    fwd = {a: next(free) for a in astral}
    back = str.maketrans({v: k for k, v in fwd.items()})
    for tok in _lex(text.translate(str.maketrans(fwd))):
        yield tok.translate(back)


def ptb_tokenize_lines(captions: Iterable[str]) -> list[str]:
    """Tokenize captions exactly as one pycocoevalcap ``PTBTokenizer.tokenize`` call over them, in order.

    Newlines inside a caption become spaces (as in pycocoevalcap). Returns one space-joined string per
    caption. A quoted SGML attribute may run over a line break, as in Java: its token is then split over
    two captions' outputs exactly as pycocoevalcap splits it.
    """
    lines = [c.replace("\n", " ") for c in captions]
    if not lines:
        return []
    out = _java_output(_lex_text("\n".join(lines))).split("\n")
    if len(out) != len(lines):
        raise ValueError(
            "a caption contains a line separator other than '\\n' (\\r, \\u2028, \\u2029, \\v, \\f); "
            "pycocoevalcap would misalign its captions on it; replace it with a space first"
        )
    return [_finish(line) for line in out]


@functools.lru_cache(maxsize=1 << 16)  # evaluation re-tokenizes the same references every epoch
def ptb_tokenize(caption: str) -> str:
    """Tokenize one caption (see the module docstring for the context-dependent corners).

    Line separators other than ``"\\n"`` (``\\r``, ``\\u2028``, ...), on which pycocoevalcap misaligns its
    captions, are treated as spaces.
    """
    toks = (t for t in _lex_text(caption.replace("\n", " ") + "\n") if t != _NEWLINE_TOKEN)
    return _finish(_java_output(toks))
