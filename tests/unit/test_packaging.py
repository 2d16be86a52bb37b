"""The wheel installs one import name, ``loyalty``, with the data files the engine reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEFT_OUT = (".git", ".venv", ".local", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the tree.
    source = tmp_path_factory.mktemp("source") / "loyalty-stream"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    (built,) = out.glob("loyalty_stream-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_has_one_top_level_import_name(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"loyalty"}
    (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["loyalty"]


def test_the_wheel_holds_every_package_and_the_files_the_engine_reads(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    for package in ("agents", "bench", "cli", "core", "demo", "localkafka", "schemas",
                    "streams", "tables"):  # fmt: skip
        assert f"loyalty/{package}/__init__.py" in names, package
    assert "loyalty/core/accounts.py" in names
    assert "loyalty/program/default.toml" in names
    assert "loyalty/program/catalog.toml" in names
    assert "loyalty/schemas/json/transaction.schema.json" in names
    assert "loyalty/localkafka/pom.xml" in names
    assert not any(name.startswith("loyalty/tests/") for name in names)


def test_the_script_runs_the_command_line_of_the_one_name(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "loyalty = loyalty.cli.main:main" in wheel.read(entry_points).decode()
