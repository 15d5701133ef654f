"""The README's commands and the CI script agree, and the README's driver works."""

from __future__ import annotations

import re

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
