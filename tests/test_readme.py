"""The README's commands and the CI script agree, and the README's driver works."""

from __future__ import annotations

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


def test_the_python_api_example_runs_as_written(tmp_path: Path) -> None:
    """The README's Python example, run as a user would, in a fresh directory
    that holds a lab's own ``instruments/`` and ``controller/`` packages (which
    must not shadow selflab's)."""
    (example,) = re.findall(r"## Python API\n.*?```python\n(.*?)```", README, flags=re.S)
    for own in ("instruments", "controller", "planners", "simulators"):
        (tmp_path / own).mkdir()
        (tmp_path / own / "__init__.py").write_text(f"raise ImportError('the lab\\'s own {own}/ was imported')\n")
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
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
