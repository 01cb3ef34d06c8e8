"""The package's layers (``.importlinter``): ``lint-imports`` passes on the tree, and its three contracts would
catch an upward import, an import between independent siblings, a leaf utility importing a layer, and a cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.application import use_cases
from importlinter.configuration import configure, settings

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / ".importlinter")


def test_lint_imports_passes_on_the_tree():
    exe = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(exe), "--no-cache", "--config", CONFIG], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


class _WithExtraImport:
    """The real graph builder, plus one import the tree does not have."""

    def __init__(self, builder, importer: str, imported: str):
        self.builder, self.importer, self.imported = builder, importer, imported

    def build(self, **kwargs) -> grimp.ImportGraph:
        graph = self.builder.build(**kwargs)
        graph.add_import(importer=self.importer, imported=self.imported, line_number=1, line_contents="import")
        return graph


def broken_contracts(importer: str, imported: str) -> set[str]:
    """Names of the contracts the tree breaks with one more import ``importer -> imported``."""
    configure()
    settings.configure(GRAPH_BUILDER=_WithExtraImport(settings.GRAPH_BUILDER, importer, imported))
    try:
        use_cases._register_built_in_contract_types()
        report = use_cases.create_report(use_cases.read_user_options(CONFIG), cache_dir=None)
    finally:
        configure()
    return {contract.name for contract, check in report.get_contracts_and_checks() if not check.kept}


@pytest.mark.parametrize(
    "importer, imported, contract",
    [
        ("ofa_lightning.model.ofa", "ofa_lightning.training.module", "Layers"),  # model imports training
        ("ofa_lightning.tasks.base", "ofa_lightning.data.samples", "Layers"),  # tasks sit below data
        ("ofa_lightning.tasks.caption", "ofa_lightning.metrics.caption", "Layers"),  # independent siblings
        ("ofa_lightning.errors", "ofa_lightning.model.ofa", "Leaf utilities"),
        ("ofa_lightning.tasks.base", "ofa_lightning.tasks.registry", "No import cycles"),  # registry imports base
    ],
)
def test_the_contracts_catch_a_bad_import(importer, imported, contract):
    broken = broken_contracts(importer, imported)
    assert any(name.startswith(contract) for name in broken), broken


def test_a_downward_import_breaks_no_contract():
    assert broken_contracts("ofa_lightning.training.module", "ofa_lightning.model.ofa") == set()
