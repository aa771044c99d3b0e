"""The distribution's metadata as setuptools reads it on every `pip install`."""

from __future__ import annotations

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution
from setuptools.warnings import SetuptoolsDeprecationWarning

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_reads_without_deprecation_warnings():
    """`project.license` as an SPDX string: a TOML table prints a warning on every install."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    deprecations = [w for w in caught if issubclass(w.category, SetuptoolsDeprecationWarning)]
    assert deprecations == []
    assert dist.metadata.license_expression == "Apache-2.0"
