"""Helpers shared by tests/test_metrics_*.py: random captions and a simulated multi-rank sync."""

from __future__ import annotations

import copy
import random

from ofa_lightning.metrics import simple_tokenize

WORDS = (
    "a an the man woman dog cat sits on of with red blue small large table street park "
    "riding bike holding umbrella two people standing near water eating pizza white black"
).split()
PUNCT = ["", "", "", ".", ",", "!", "'s"]


def random_caption(rng: random.Random, max_len: int = 12) -> str:
    n = rng.choice([0, 1, 2] + list(range(3, max_len + 1)) * 3)
    words = [rng.choice(WORDS) + rng.choice(PUNCT) for _ in range(n)]
    if words and rng.random() < 0.3:
        words[0] = words[0].capitalize()
    return " ".join(words)


def random_caption_sets(n_images: int, seed: int = 0, n_refs: int = 5):
    """(preds, refs) with duplicates (pred copied from a ref, repeated refs) and empty-ish captions."""
    rng = random.Random(seed)
    preds, refs = [], []
    for _ in range(n_images):
        rs = [random_caption(rng) for _ in range(n_refs)]
        if rng.random() < 0.2:
            rs[1] = rs[0]  # duplicate reference
        if rng.random() < 0.05:
            rs[2] = "."  # tokenizes to an empty caption
        r = rng.random()
        if r < 0.15:
            pred = rs[rng.randrange(n_refs)]  # exact copy of a reference
        elif r < 0.2:
            pred = rng.choice(["", ".", "dog"])  # empty-ish prediction
        else:
            pred = random_caption(rng)
        preds.append(pred)
        refs.append(rs)
    return preds, refs


def coco_dicts(preds, refs):
    """pycocoevalcap inputs ({id: [caption]}, {id: [refs]}) tokenized with simple_tokenize."""
    res = {i: [simple_tokenize(p)] for i, p in enumerate(preds)}
    gts = {i: [simple_tokenize(x) for x in r] for i, r in enumerate(refs)}
    return gts, res


def simulated_sync(metrics):
    """Make every metric in ``metrics`` (one per simulated rank) hold the all-gathered state.

    Runs torchmetrics' own ``_sync_dist`` (including list pre-concatenation and the empty-rank path)
    with a fake all-gather that returns the tensors every rank would have sent, in rank order.
    """
    sent = []
    for m in metrics:
        probe, rec = copy.deepcopy(m), []
        probe._sync_dist(lambda t, group=None, rec=rec: (rec.append(t.clone()), [t])[1])
        sent.append(rec)
    for m in metrics:
        counter = iter(range(len(sent[0])))

        def gather(t, group=None):
            i = next(counter)
            return [rank[i] for rank in sent]

        m._sync_dist(gather)


# ---------------------------------------------------------------------------------------------------------
# Noisy caption corpus for the PTB tokenizer comparison (tests/data/metrics/ptb_corpus.json.gz holds its
# Stanford PTBTokenizer output as pycocoevalcap produces it).
# ---------------------------------------------------------------------------------------------------------

_COCO_WORDS = (
    "a an the man woman person people child boy girl dog dogs cat cats horse bird birds sits sitting stands "
    "standing on in of with near next to at top table street road park beach field kitchen room bed couch "
    "red blue green white black yellow brown small large big old young two three several many group riding "
    "holding eating playing looking walking flying grass water snow sky building bus train car truck plate "
    "pizza sandwich cake bowl food umbrella bike motorcycle laptop phone tv clock sign window door tree"
).split()
_ABBREVS = (
    "U.S. U.K. U.S.A. a.m. p.m. A.M. P.M. Mr. Mrs. Ms. Dr. Prof. St. Ave. Jr. Sr. Inc. Co. Corp. Ltd. etc. "
    "vs. e.g. i.e. approx. No. no. Fig. fig. figs. ca. Jan. Feb. Sept. Oct. Mon. Fri. Calif. Mass. Tex. "
    "Wash. Ph.D. Ed.D. a.k.a. cf. Lt. Gen. Col. Capt. Sgt. Mt. Ft. Bros. Blvd. Rd. Esq. Bldg. est. ext. "
    "sq. tel. Pty. pty. al. seq. pp. op. art. prop. nos. Dept. Natl. Mfg. A. B. I. X. Z."
).split()
_CONTRACTIONS = (
    "don't can't won't isn't aren't wasn't weren't doesn't didn't couldn't shouldn't wouldn't haven't hasn't "
    "I'm I've I'll I'd you're you've you'll you'd he's she's it's we're we've we'll they're they've they'll "
    "that's there's what's let's man's dog's cats' children's James' boss's o'clock rock'n'roll y'all "
    "ma'am 'em 'til 'till 'cause 'twas 'tis '90s '80s '99 ol' goin' nothin' somethin' Dunkin' c'mon e'er "
    "ev'ry li'l nat'l nor'easter s'mores cont'd O'Neil O'Brien d'Artagnan l'amour Cap'n c'est "
    "cannot gonna gotta wanna lemme gimme CANNOT Gonna don\u2019t it\u2019s dog\u2019s can`t isn&apos;t"
).split()
_HYPHENATED = (
    "black-and-white well-known t-shirt x-ray half-eaten two-story 3-D co-ed pro-life anti-war e-mail "
    "state-of-the-art up-to-date re-enter self-driving 20-year-old 10-foot mid-air o-ring U.S.-made "
    "non-U.S. Sino-U.S. U.S.-U.K. and/or his/her w/ w/o 24/7 km/h A/C 1/2 3/4 10/20/2014 1-2-3 "
    "S&P S&P-500 AT&T R&D Q&A B&W S&Ls snake_case under_score re\u00adform soft\u00adhyphen"
).split()
_NUMBERS = (
    "0 1 2 3 10 12 100 1,000 10,000 1,234,567 3.5 0.25 .5 3.14159 1.5m 2.5kg 10km 5ft 6'2 5'11\" 100% "
    "50% $5 $10.99 $1,000 US$ 20 C$ A$ HK$ # #1 #2 \u00a35 \u20ac10 \u00a53 10\u00a2 1st 2nd 3rd 4th "
    "21st 1990s 1990's 80s 10:30 9:45pm 12:00 3:15 2014 -5 +3 -0.5 +1.5 10-12 1-800-555-1234 555-1234 "
    "(555) 555-1234 +1 555 123 4567 555.123.4567 3x 4x4 2x2 1/4 7/8 1 1/2 2-1/2 \u00bd \u00bc \u00be "
    "\u2153 \u2154 \u215b x\u00b2 m\u00b3 10\u00b0 45\u00b0F 5\u00d73 6\u00f72 \u2074 \u2082 10^3 1e5 "
    "No.1 no.5 fig.3 ca.1900 pp.12 12/25 1/2/2015 2015-01-02"
).split()
_SYMBOLS = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + (
    ".. ... .... ..... . . . -- --- ---- ----- ?! !! ?? !!! ?!? ** *** \\* \\*\\* @@ ## __ == => <= "
    "<< >> -> <- :) :( :-) :-( ;) :D :P :p =) :/ :| :] :[ <3 </3 ^_^ -_- o_O (^_^) (-.-) (^-^) x_x "
    ":o) ;-) :'( :* >:( &amp; &AMP; &quot; &apos; &lt; &gt; &nbsp; &mdash; &ndash; &MD; &#39; &#8217; "
    "&eacute; &uuml; &agrave; &HT; &odq; &cdq; & amp; -LRB- -RRB- -LCB- -lrb- c++ C++ c# F# f# "
    "\u2026 \u2013 \u2014 \u2015 \u2018 \u2019 \u201a \u201b \u201c \u201d \u201e \u201f \u00ab \u00bb "
    "\u2039 \u203a \u00a7 \u00b6 \u00a9 \u00ae \u2122 \u2022 \u00b7 \u2020 \u2021 \u2030 \u2032 \u2033 "
    "\u2190 \u2192 \u2191 \u2193 \u2194 \u21d2 \u2200 \u2203 \u2208 \u221e \u2248 \u2260 \u2264 \u2265 "
    "\u2212 \u00b1 \u00ac \u00a6 \u00a8 \u00af \u00b4 \u00b8 \u2605 \u2606 \u2665 \u2764 \u263a \u2713 "
    "\u2714 \u2718 \u266a \u266b \u2600 \u2601 \u2602 \u00a1 \u00bf \u3002 \u3001 \uff01 \uff1f \uff0c "
    "\u00a0 \u2009 \u200b \u200e \ufeff \u00ad \x7f \x00 \x01 \x1b \u2010 \u2011 \u058a"
).split(" ")
_NON_ASCII = (
    "caf\u00e9 na\u00efve \u00fcber r\u00e9sum\u00e9 se\u00f1or fa\u00e7ade \u00c5ngstr\u00f6m "
    "Stra\u00dfe \u00d8re S\u00e3o Z\u00fcrich \u0141\u00f3d\u017a \u010ce\u0161ko \u00c9COLE "
    "\u0391\u03b8\u03ae\u03bd\u03b1 \u039f\u0394\u039f\u03a3 \u03c3\u03bf\u03c6\u03cc\u03c2 "
    "\u041c\u043e\u0441\u043a\u0432\u0430 \u041f\u0420\u0418\u0412\u0415\u0422 \u6771\u4eac "
    "\u732b \u3053\u3093\u306b\u3061\u306f \u30ab\u30bf\u30ab\u30ca \ud55c\uad6d\uc5b4 "
    "\u0639\u0631\u0628\u064a \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 "
    "\u0e44\u0e17\u0e22 \u0130stanbul \u0131\u015f\u0131k e\u0301t\u00e9 n\u0303o \ufb01sh "
    "\uff21\uff22\uff23 \uff11\uff12 \u0660\u0661\u0662 \u0966\u0967 \u00b5m \u212b \u2163 \u24b6 "
    "\u039f\u0394\u039f\u03a3-\u0391\u0392 \u0391\u03a3_\u0392 \u0391\u03a31\u0392 a-\u0391\u03a3-b "
    "\u03a3\u039f\u03a6\u039f\u03a31 \u0391\u03a3.\u0392 \u03a3"
).split()
_EMOJI = (
    "\U0001f600 \U0001f436 \U0001f431 \U0001f355 \U0001f44d \U0001f3fd \u2764\ufe0f \U0001f1fa\U0001f1f8 "
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f525 \U0001f4f7 \U00010348 \U0001d11e"
).split()
_WEBBY = (
    "http://example.com https://www.example.org/path/to?q=1&x=2 www.google.com google.com foo.bar.net "
    "mit.edu me@example.com john.doe@mail.co.uk <me@x.org> &lt;a@b.com&gt; @user @john_doe #hashtag "
    "#NoFilter photo.jpg IMG_0001.JPG file.tar.gz report.pdf index.html script.py a.b.c "
    '<b> </b> <i>x</i> <br/> <br /> <a href="x.html"> <img src=\'a.png\' alt="b c"> <!DOCTYPE html> '
    '<?xml version="1.0"?> <p class=x> < b > a<b'
).split(" ")
_WHITESPACE = [" "] * 30 + ["  ", "   ", "\t", " \t ", "\u00a0", "\u2009", "\u3000", ""]


def _piece(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.40:
        return rng.choice(_COCO_WORDS)
    pool = rng.choice([_ABBREVS, _CONTRACTIONS, _HYPHENATED, _NUMBERS, _SYMBOLS, _SYMBOLS, _NON_ASCII, _EMOJI, _WEBBY])
    p = rng.choice(pool)
    if rng.random() < 0.1:  # punctuation glued to the piece
        p = rng.choice(_SYMBOLS[:32]) + p if rng.random() < 0.5 else p + rng.choice(_SYMBOLS[:32])
    return p


def _ascii_soup(rng: random.Random) -> str:
    chars = "abcxyzABCXYZ019 " + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" * 2
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, 24)))


def noisy_caption(rng: random.Random) -> str:
    """One caption string: COCO-like words mixed with every kind of punctuation, symbol and script."""
    if rng.random() < 0.08:
        return _ascii_soup(rng)
    n = rng.randint(1, 14)
    pieces = [_piece(rng) for _ in range(n)]
    style = rng.random()
    if style < 0.45 and pieces:
        pieces[0] = pieces[0][:1].upper() + pieces[0][1:]
    elif style < 0.5:
        pieces = [p.upper() for p in pieces]
    elif style < 0.55:
        pieces = [p.title() for p in pieces]
    out = pieces[0]
    for p in pieces[1:]:
        out += rng.choice(_WHITESPACE) + p
    end = rng.random()
    if end < 0.35:
        out += "."
    elif end < 0.42:
        out += rng.choice(["!", "?", "...", " .", ". ", "..", "?!", '."', ".'", ")", ".)", " :)", ";"])
    if rng.random() < 0.05:
        out = rng.choice(_WHITESPACE[-8:]) + out
    if rng.random() < 0.05:
        out += rng.choice(_WHITESPACE[-8:])
    return out


def noisy_caption_corpus(n: int = 20000, seed: int = 36) -> list[str]:
    """``n`` deterministic noisy captions (plus a fixed list of hand-picked hard cases at the front)."""
    rng = random.Random(seed)
    fixed = [
        p
        for pool in (_ABBREVS, _CONTRACTIONS, _HYPHENATED, _NUMBERS, _SYMBOLS, _NON_ASCII, _EMOJI, _WEBBY)
        for p in pool
    ]
    fixed += ["", " ", "   ", "\t", ".", "A.", "A man.", "The U.S.", "etc.", "fig. 3", "No. 5 bus", "I.", "x."]
    return (fixed + [noisy_caption(rng) for _ in range(n)])[: max(n, len(fixed))]


def java_ptb_reference(captions: list[str]) -> list[str]:
    """pycocoevalcap's own PTBTokenizer (Java) over ``captions`` in one call: one output string each."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0] for i in range(len(captions))]
