"""The layers of DESIGN.md §2 are a contract (import-linter, in pyproject.toml) that a wrong import breaks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("store", "ingest", "replies", "kcc")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the contract on the packages in `tree` (found first on the path, before any installed copy)."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=120, check=False,
    )


def copy_of_the_project(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_project_keeps_its_layers(tmp_path: Path) -> None:
    result = lint_imports(copy_of_the_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_ingest_importing_kcc_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_of_the_project(tmp_path)
    with (tree / "ingest" / "analysis.py").open("a", encoding="utf-8") as module:
        module.write("\nfrom kcc.config import Config  # noqa: E402  (the mistake this test makes on purpose)\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ingest.analysis -> kcc.config" in result.stdout


def test_a_use_case_importing_the_cli_breaks_the_contract(tmp_path: Path) -> None:
    tree = copy_of_the_project(tmp_path)
    with (tree / "kcc" / "usecases" / "verify.py").open("a", encoding="utf-8") as module:
        module.write("\nfrom kcc.cli.output import safe  # noqa: E402  (on purpose)\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kcc.usecases.verify -> kcc.cli.output" in result.stdout
