"""No user-supplied file is unpickled without the restricted unpickler or the explicit trust flag: a scan of the
tree (ast) for pickle / torch / numpy / pandas loads, and a code-running pickle fed to every option that takes a
file (checkpoints to resume, init_from, tokenizer=checkpoint, OFA.load, a VQ checkpoint, the SCST / CIDEr df, answer
lists, the recipes' pickles): each is refused and the command it carries never runs."""

from __future__ import annotations

import ast
import collections
import os
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("ofa_lightning", "data_recipes", "benchmarks", "scripts")
# the restricted unpickler itself
UNPICKLER_HOME = {"ofa_lightning/safe_pickle.py"}


def _calls(tree: ast.AST):
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, parents


def _dotted(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _under_trust_flag(node: ast.AST, parents: dict, source: str) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "trust" in (ast.get_source_segment(source, node.test) or ""):
            return True
    return False


def unsafe_loads(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    rel = path.relative_to(REPO).as_posix()
    found = []
    for call, parents in _calls(ast.parse(source)):
        name = _dotted(call.func)
        where = f"{rel}:{call.lineno}: {ast.get_source_segment(source, call)}"
        keywords = {k.arg: k.value for k in call.keywords}
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load", "joblib.load"):
            if rel not in UNPICKLER_HOME:
                found.append(where)
        elif name in ("pandas.read_pickle", "pd.read_pickle"):
            found.append(where)
        elif name in ("np.load", "numpy.load"):
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(where)
        elif name == "torch.load":
            flag = keywords.get("weights_only")
            if flag is None:
                found.append(where + "  (no weights_only=)")
            elif isinstance(flag, ast.Constant):
                if flag.value is not True and not _under_trust_flag(call, parents, source):
                    found.append(where)
            elif "trust" not in (ast.get_source_segment(source, flag) or ""):
                found.append(where)
    return found


def test_scan_finds_unsafe_loads(tmp_path, monkeypatch):
    """The scanner itself: it flags each unsafe form and passes the safe ones."""
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    sample = tmp_path / "m.py"
    sample.write_text(
        "import pickle, torch, numpy as np\n"
        "pickle.load(open('f', 'rb'))\n"
        "torch.load('a')\n"
        "torch.load('a', weights_only=False)\n"
        "np.load('a', allow_pickle=True)\n"
        "torch.load('a', weights_only=True)\n"
        "if trust_checkpoint:\n    torch.load('a', weights_only=False)\n"
        "torch.load('a', weights_only=not trust_checkpoint)\n"
    )
    assert [line.split(":")[1] for line in unsafe_loads(sample)] == ["2", "3", "4", "5"]


def test_no_unsafe_load_in_the_tree():
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            found.extend(unsafe_loads(path))
    assert not found, "unpickling without the restricted unpickler or the trust flag:\n" + "\n".join(found)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    """(a torch checkpoint that runs a command when unpickled, a plain pickle that does, the marker it touches)"""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {
            "state_dict": {"model.w": torch.zeros(1)},
            "hyper_parameters": {"model_config": {}},
            "global_step": 1,
            "x": _Payload(marker),
        },
        ckpt,
    )
    plain = tmp_path / "evil.p"
    plain.write_bytes(pickle.dumps({"document_frequency": _Payload(marker), "ref_len": 1}, protocol=2))
    return ckpt, plain, marker


def test_checkpoint_options_refuse_a_code_running_pickle(evil, tmp_path):
    from ofa_lightning.api import OFA
    from ofa_lightning.errors import UserError
    from ofa_lightning.model.ofa import OFAModel
    from ofa_lightning.training.resume import prepare_resume
    from ofa_lightning.training.run import checkpoint_tokenizer
    from ofa_lightning.training.warm_start import load_initial_weights
    from ofa_lightning.vq.model import VQModel
    from ofa_lightning.weights.convert import load_checkpoint_file

    ckpt, _, marker = evil
    refused = (UserError, RuntimeError, pickle.UnpicklingError)
    with pytest.raises(UserError, match="cannot read the checkpoint"):  # resume=<path>
        prepare_resume(OmegaConf.create({"resume": str(ckpt)}), tmp_path / "run", overrides=([], {}))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())
    with pytest.raises(UserError, match="no other readable checkpoint"):  # resume=auto
        prepare_resume(OmegaConf.create({"resume": "auto"}), tmp_path / "run", overrides=([], {}))
    with pytest.raises(refused, match="weights_only"):  # module.init_from
        load_initial_weights(torch.nn.Linear(1, 1), ckpt)
    with pytest.raises(refused, match="weights_only"):  # tokenizer=checkpoint
        checkpoint_tokenizer(ckpt)
    with pytest.raises(refused, match="weights_only"):  # ofa-predict / ofa-serve / the API
        OFA.load(ckpt)
    with pytest.raises(refused):  # ofa-convert without --trust-checkpoint
        load_checkpoint_file(ckpt)
    with pytest.raises(refused):  # vq_path=
        VQModel.load(ckpt)
    assert OFAModel is not None and not marker.exists()


def test_scst_df_answer_lists_and_recipe_pickles_refuse_code(evil, tmp_path):
    from data_recipes.common.safe_pickle import UnsafePickleError as RecipeUnsafePickle
    from data_recipes.common.safe_pickle import safe_load_file as recipe_load
    from ofa_lightning.metrics.cider import CiderDfTable
    from ofa_lightning.safe_pickle import UnsafePickleError
    from ofa_lightning.tasks.lists import load_string_list
    from ofa_lightning.training.scst import SCST

    _, plain, marker = evil
    with pytest.raises(UnsafePickleError, match="refusing to load posix.system"):  # module.scst.df
        SCST({"df": str(plain)}).ensure_df(module=None)
    with pytest.raises(UnsafePickleError, match="system"):  # the CIDEr metric's df= option
        CiderDfTable.from_pickle(plain)
    with pytest.raises(RecipeUnsafePickle, match="system"):  # ofa-prepare refcoco's refs(*).p
        recipe_load(plain)
    for name in ("answers.pkl", "answers.json", "answers.txt"):  # answer lists are never unpickled
        copy = tmp_path / name
        copy.write_bytes(plain.read_bytes())
        try:
            load_string_list(str(copy), "answer list")
        except (ValueError, UnicodeDecodeError):
            pass
    assert not marker.exists()


def test_the_real_df_cache_format_still_loads(tmp_path):
    """OFA's / self-critical's ``coco-train-words.p``: a protocol-2 pickle of a ``defaultdict(float)``."""
    from ofa_lightning.metrics.cider import CiderDfTable

    df = collections.defaultdict(float, {("a",): 2.0, ("a", "dog"): 1.0})
    path = tmp_path / "coco-train-words.p"
    path.write_bytes(pickle.dumps({"document_frequency": df, "ref_len": 3}, protocol=2))
    table = CiderDfTable.from_pickle(path)
    assert table.document_frequency[("a", "dog")] == 1.0 and table.num_documents == 3.0
