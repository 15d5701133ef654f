"""The README's commands and the CI script agree, and the README's driver works."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import threading
import types

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


def test_readme_driver_example_talks_to_a_real_pseudo_terminal() -> None:
    """The 'Plugging in a driver' example, run as written against a pty."""
    source = re.search(r"```python\n(# my_lab/balance.py.*?)```", README, flags=re.S)
    assert source is not None
    module = types.ModuleType("my_lab_balance")
    exec(compile(source.group(1), "README:balance", "exec"), module.__dict__)
    controller_fd, device_fd = pty.openpty()
    port = os.ttyname(device_fd)

    def device() -> None:  # answers "DOSE v" with a mass of 0.998 g/mL * v
        buffer = b""
        while b"\n" not in buffer:
            buffer += os.read(controller_fd, 64)
        volume = float(buffer.split()[1])
        os.write(controller_fd, f"{0.998 * volume:.4f}\r\n".encode())

    thread = threading.Thread(target=device, daemon=True)
    thread.start()

    async def session() -> dict[str, float]:
        balance = module.Balance(port)
        await balance.connect()
        try:
            return await balance.run({"volume_ml": 2.5})
        finally:
            await balance.close()

    result = asyncio.run(session())
    thread.join(timeout=5)
    os.close(controller_fd)
    os.close(device_fd)
    assert result == {"mass_g": 2.495}
