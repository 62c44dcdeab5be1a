"""Package discovery; everything else is in pyproject.toml.

The tensorflow-datasets builders in the folder data/ install as the package `jepa_datasets`: a name of their own,
where a top-level `data` would clash with any other `data` module on the path. pyproject's `packages.find` cannot
install a folder under another name, so the packages are found here (configs/ac, plan, pretrain are namespace
packages).
"""
from setuptools import find_namespace_packages, setup

PACKAGES = find_namespace_packages(include=["jepa", "jepa.*", "planning", "planning.*", "configs", "configs.*"])
BUILDERS = ["jepa_datasets", *(f"jepa_datasets.{p}" for p in find_namespace_packages("data"))]

setup(packages=PACKAGES + BUILDERS, package_dir={"jepa_datasets": "data"})
