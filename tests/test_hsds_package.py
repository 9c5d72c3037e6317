"""An installed wheel of matcher reads HSDS with the taxonomy mapping it ships.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation --no-index``) from a
copy of the repository without its build artefacts, installed with ``pip install --target``
into a temporary directory, and imported from there by the virtualenv's python, run outside
the repository with only that directory on ``PYTHONPATH`` (so not the editable install).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from matcher.hsds import read_hsds

ROOT = Path(__file__).resolve().parents[1]
CSV_DIR = ROOT / "tests" / "fixtures" / "hsds" / "csv"
MAPPING = "matcher/data/hsds_taxonomy_map.csv"

# Not in a clean clone: the repository, the virtualenv, outputs and build artefacts. An
# in-tree build would also put into the wheel whatever an earlier build left in build/lib
# (a data file since dropped from the package, say), so the wheel is built from a copy.
_TOP_LEVEL = {".git", ".venv", "venv", "build", "dist", "out", "models"}
_ANYWHERE = shutil.ignore_patterns(
    "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
    ".coverage", ".coverage.*",
)  # fmt: skip


def _not_in_a_clone(directory: str, names: list[str]) -> set[str]:
    top = {n for n in names if n in _TOP_LEVEL} if Path(directory) == ROOT else set()
    return top | set(_ANYWHERE(directory, names))


def _environ(*drop: str) -> dict[str, str]:
    """This process's environment without coverage's subprocess measurement (``make test``
    runs under ``--cov``: an installed copy measured as ``matcher`` would be reported from
    files that are gone) and without the variables starting with ``drop``."""
    gone = ("COVERAGE_", "COV_CORE_", *drop)
    return {k: v for k, v in os.environ.items() if not k.startswith(gone)}


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**_environ(), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _unmet_build_requirements() -> list[str]:
    """The build requirements of pyproject.toml that this environment does not meet."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    unmet = []
    for spec in requires:
        req = Requirement(spec)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{spec} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{spec} (installed: {version})")
    return unmet


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the working tree, built offline."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = Path(shutil.copytree(ROOT, tmp / "matcher-src", ignore=_not_in_a_clone))
    built = _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", str(tmp / "dist"), str(source), cwd=tmp)  # fmt: skip
    if built.returncode != 0:
        unmet = _unmet_build_requirements()
        if unmet:
            lines = [line.strip() for line in built.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if re.match(r"\w+(Error|Exception): ", line)]
            pytest.skip(
                f"pip cannot build the wheel offline: the environment {sys.prefix} lacks "
                f"pyproject.toml's build requirements {', '.join(unmet)}, and "
                f"--no-build-isolation builds with its packages only (the build failed with "
                f"{(errors or lines or ['no message'])[-1]!r})"
            )
        pytest.fail(f"pip wheel failed:\n{built.stdout}\n{built.stderr}")
    (whl,) = (tmp / "dist").glob("matcher-*.whl")
    return whl


def test_the_wheel_ships_the_taxonomy_mapping(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        assert MAPPING in zf.namelist()
        assert zf.read(MAPPING) == (ROOT / MAPPING).read_bytes()


def test_the_installed_wheel_reads_hsds_with_its_own_mapping(wheel: Path, tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(ROOT)
    target = tmp_path / "site"
    installed = _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel),
                     cwd=tmp_path)  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    script = (
        "import json, sys\n"
        "import matcher, matcher.hsds\n"
        "frame = matcher.hsds.read_hsds(sys.argv[1]).frame\n"
        "print(json.dumps({'matcher': matcher.__file__,\n"
        "                  'mapping': str(matcher.hsds.DEFAULT_MAPPING_PATH),\n"
        "                  'partners': len(frame),\n"
        "                  'categories': frame['categories'].tolist()}))\n"
    )
    env = {**_environ("PYTHON"), "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", script, str(CSV_DIR)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    site = target.resolve()
    assert Path(out["matcher"]).resolve().is_relative_to(site), out["matcher"]
    assert Path(out["mapping"]).resolve() == site / MAPPING
    here = read_hsds(CSV_DIR).frame
    assert out["partners"] == len(here) == 4
    assert out["categories"] == here["categories"].tolist()
