"""The package dependency rules of DESIGN.md, as import-linter contracts.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); here
import-linter's ``lint-imports`` checks them on a copy of this checkout laid
out as installed (``selflab/controller``, ...: grimp walks folders and cannot
follow setuptools' package-dir mapping), and on such a copy with one wrong
import each, to show that every contract catches what it forbids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("controller", "instruments", "planners", "simulators")
CONTRACTS: dict[str, str] = {
    c["id"]: c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}
"""Contract id -> name, as ``lint-imports`` reports it."""


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``root``, on the packages found there, with its ``pyproject.toml``."""
    script = Path(sys.executable).with_name("lint-imports")
    assert script.exists(), "import-linter is not installed: pip install -e '.[test]'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "250"}  # one report line per contract
    return subprocess.run([str(script), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def verdicts(report: str) -> dict[str, str]:
    """Contract id -> ``KEPT`` or ``BROKEN``, from a ``lint-imports`` report."""
    lines = report.splitlines()
    return {cid: next((line.removeprefix(name).strip() for line in lines if line.startswith(f"{name} ")), "not reported")
            for cid, name in CONTRACTS.items()}


def installed_layout(root: Path) -> Path:
    """A copy of the packages under ``root/selflab/``, as the wheel installs them, with ``pyproject.toml``."""
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "selflab").mkdir()
    shutil.copy(REPO / "selflab" / "__init__.py", root / "selflab")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / "selflab" / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_packages_keep_every_dependency_contract(tmp_path: Path) -> None:
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CONTRACTS, "KEPT")


@pytest.mark.parametrize(
    ("contract", "module", "line"),
    [
        ("planners", "planners/stray.py", "import selflab.controller"),
        ("controller", "controller/stray.py", "import selflab.simulators.reactor"),
        ("simulators", "simulators/stray.py", "from selflab.planners.space import SearchSpace"),
        ("instruments", "instruments/stray.py", "import selflab.planners"),
        ("instruments", "instruments/stray.py", "import selflab.simulators.emulators"),
        ("study", "controller/study.py", "import asyncio"),
        ("study", "controller/study.py", "import selflab.controller.stray  # which imports instruments"),
        ("scheduler", "controller/scheduler.py", "import sqlite3"),
        ("scheduler", "controller/scheduler.py", "from selflab.controller.ledger import Ledger"),
    ],
    ids=["planners->controller", "controller->simulators", "simulators->planners", "instruments->planners",
         "instruments->simulators", "study->asyncio", "study->controller->instruments", "scheduler->sqlite3",
         "scheduler->ledger"],
)
def test_a_wrong_import_breaks_exactly_its_contract(tmp_path: Path, contract: str, module: str, line: str) -> None:
    """A copy of the packages with one wrong import, in a new module that
    nothing else imports (or in ``selflab.controller.study``), breaks one contract."""
    packages = installed_layout(tmp_path) / "selflab"
    if module != "controller/stray.py":
        (packages / "controller" / "stray.py").write_text("import selflab.instruments.registry\n")
    with (packages / module).open("a") as handle:
        handle.write(f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert verdicts(result.stdout) == {cid: "BROKEN" if cid == contract else "KEPT" for cid in CONTRACTS}, result.stdout
    assert f"{module.removesuffix('.py').replace('/', '.')} -> " in result.stdout
