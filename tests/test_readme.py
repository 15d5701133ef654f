"""The README's commands and the CI script agree, and the README's driver works."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert "pytest" in command and "torch==2.13.0" in command
    assert command in [b.strip() for b in _bash_blocks()]
    assert "SELFLAB_TEST_POSTGRES_URL" in "\n".join(ci)


def test_readme_demo_command_names_a_shipped_config() -> None:
    demo = next(b for b in _bash_blocks() if "selflab run" in b)
    for path in re.findall(r"lab_configs/\S+\.yaml", demo):
        assert (REPO / path).exists(), path
    assert "torch==2.13.0" in demo


def _python_api_examples() -> list[str]:
    """The ``python`` blocks of the README's "Python API" section, in order."""
    section = README.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _run_as_a_user(example: str, where: Path) -> subprocess.CompletedProcess[str]:
    """``example`` run as a user would, in a fresh directory that holds a lab's
    own ``instruments/`` and ``controller/`` packages (which must not shadow
    selflab's)."""
    for own in ("instruments", "controller", "planners", "simulators"):
        (where / own).mkdir()
        (where / own / "__init__.py").write_text(f"raise ImportError('the lab\\'s own {own}/ was imported')\n")
    script = where / "example.py"
    script.write_text(example)
    return subprocess.run([sys.executable, str(script)], cwd=where, capture_output=True, text=True, timeout=300)


def test_the_python_api_example_runs_as_written(tmp_path: Path) -> None:
    """The README's Python example, run as a user would, in a fresh directory
    that holds a lab's own ``instruments/`` and ``controller/`` packages (which
    must not shadow selflab's)."""
    example = _python_api_examples()[0]
    out = _run_as_a_user(example, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "13 results; sobol_init", out.stdout
    assert "params=" in lines[-2]
    ledger = tmp_path / "runs" / "branin-notebook.sqlite"
    status = subprocess.run([str(Path(sys.executable).with_name("selflab")), "status", "--ledger", f"sqlite:///{ledger}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "completed 13" in status.stdout and "experiment 13 (attached): x1=3.14159" in status.stdout, status.stdout
    assert "state      stopped (closed: study closed with 0 trial(s) awaiting a result)" in status.stdout, status.stdout


def test_the_runner_example_runs_as_written(tmp_path: Path) -> None:
    """The README's second Python example: a Runner built from objects on a
    bundled simulator, on the simulated clock, run as a user would."""
    examples = _python_api_examples()
    assert len(examples) == 2 and "selflab.Runner(" in examples[1]
    out = _run_as_a_user(examples[1], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "max_experiments: 12 results in 1 h of simulated time", out.stdout
    assert lines[-2].startswith("params={'x1': "), out.stdout
    ledger = tmp_path / "runs" / "branin-runner.sqlite"
    status = subprocess.run([str(Path(sys.executable).with_name("selflab")), "status", "--ledger", f"sqlite:///{ledger}", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["counts"]["completed"] == 12 and data["clock"] == "simulated" and data["state"] == "stopped", data
