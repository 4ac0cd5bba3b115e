"""The conda environment.yml and pyproject.toml must pin the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

import scratchdet

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    parts = sorted(p.strip() for p in spec.split(",") if p.strip())
    return name.lower().replace("_", "-"), ",".join(parts)


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_normalise(r) for r in reqs)


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_normalise(r) for r in pip_list if not r.startswith("-e"))


def test_environment_yml_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_environment_yml_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups()))
    assert (major, minor) >= low


def test_normalise_detects_a_changed_pin():
    assert _normalise("torch==2.14.1") != _normalise("torch==2.13.0")
    assert _normalise("numpy>=1.24,<3") == _normalise("numpy <3, >=1.24")


def test_version_is_exposed():
    assert re.fullmatch(r"\d+\.\d+\.\d+", scratchdet.__version__)


def test_top_level_exports_resolve():
    for name in scratchdet.__all__:
        assert getattr(scratchdet, name) is not None, name
