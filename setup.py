"""Package list for setuptools (all other metadata is in pyproject.toml).

The Hydra configs stay at the repository's top level (``conf/``) and ship inside the package as
``ofa_lightning/conf``; ``ofa_lightning/paths.py`` finds the one that exists (checkout or install).
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
CONF_PACKAGES = [
    "ofa_lightning.conf",
    *sorted(
        ".".join(("ofa_lightning", "conf", *d.relative_to(HERE / "conf").parts))
        for d in (HERE / "conf").rglob("*")
        if d.is_dir() and d.name != "__pycache__"
    ),
]

setup(
    packages=[
        *find_namespace_packages(include=["ofa_lightning", "ofa_lightning.*", "data_recipes", "data_recipes.*"]),
        *CONF_PACKAGES,
    ],
    package_dir={"ofa_lightning.conf": "conf"},
    package_data={**{name: ["*.yaml"] for name in CONF_PACKAGES}, "ofa_lightning.serve": ["static/*"]},
)
