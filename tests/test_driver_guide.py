"""The README's "Write a driver" runs as written, with no hardware.

The driver (``my_lab/dosing.py``) and its conformance test
(``tests/test_dosing.py``) are cut from the README into a fresh folder; the
device it talks to is the README's device file served by ``selflab emulate
--device`` on a real pseudo-terminal; the conformance test runs with the
README's own command; a second, garbling emulator checks the error mapping,
and the same file is also queried through pyvisa-sim. The rig config is run
against ``selflab emulate rig``.
Only the port folders move (to the test's temporary directory), so that
test runs at the same time do not share a port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from selflab.instruments import transports
from selflab.instruments.errors import BadResponse
from selflab.instruments.testing import check_instrument

pytestmark = pytest.mark.e2e

README = (REPO / "README.md").read_text()
GUIDE = README[README.index("## Write a driver"):README.index("\n## ", README.index("## Write a driver") + 1)]
BIN = Path(sys.executable).parent


def block(language: str, containing: str) -> str:
    """The one ``language`` code block of the guide that contains ``containing``."""
    (found,) = [b for b in re.findall(rf"```{language}\n(.*?)```", GUIDE, flags=re.S) if containing in b]
    return found


def shell_env(**extra: str) -> dict[str, str]:
    """The user's shell: this venv's ``python`` and ``selflab`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


@contextmanager
def emulator(command: str, link_dir: str, tmp: Path) -> Iterator[str]:
    """Run a README ``selflab emulate`` command with its ``--link-dir`` moved under ``tmp``; yields its output."""
    moved = command.replace(link_dir, str(tmp))
    assert moved != command, f"{link_dir} is not in {command!r}"
    process = subprocess.Popen(shlex.split(moved), cwd=REPO, env=shell_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = []
    try:
        while not lines or lines[-1] != "serving until Ctrl-C\n":
            line = process.stdout.readline()
            assert line, f"the emulator exited: {process.communicate(timeout=10)}"
            lines.append(line)
        yield "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as the user stops it
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0 and "Traceback" not in err, err


def test_the_device_file_in_the_readme_is_the_shipped_one() -> None:
    shipped = (REPO / "examples" / "dosing_balance.yaml").read_text()
    assert block("yaml", "spec:") == "".join(line for line in shipped.splitlines(keepends=True) if not line.startswith("#"))


def test_the_driver_passes_its_conformance_test_against_the_emulated_device(tmp_path: Path) -> None:
    project = tmp_path / "lab"
    for code in (block("python", "# my_lab/dosing.py"), block("python", "# tests/test_dosing.py")):
        path = project / code.splitlines()[0].removeprefix("# ")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    serve = block("bash", "selflab emulate --device")
    with emulator(serve.strip(), "/tmp/selflab-balance", tmp_path / "ports") as printed:
        port = tmp_path / "ports" / "balance"
        assert printed.splitlines()[0] == f"balance: {port}   (9600 8N1, lines end in CR LF)"
        check = block("bash", "test_dosing.py").strip()
        out = subprocess.run(check, shell=True, cwd=project, env=shell_env(BALANCE_PORT=str(port)),
                             capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout, out.stdout


def test_the_rig_config_runs_on_the_ports_selflab_emulate_rig_prints(tmp_path: Path) -> None:
    config = yaml.safe_load(block("yaml", "flow_rig.yaml").replace("/tmp/selflab-rig", str(tmp_path / "rig")))
    config["stop"]["max_experiments"] = 3  # the README's 10, cut to keep the test short
    path = tmp_path / "flow_rig.yaml"
    path.write_text(yaml.safe_dump(config))
    with emulator(block("bash", "selflab emulate rig").strip(), "/tmp/selflab-rig", tmp_path / "rig") as printed:
        for device in ("pump", "hotplate", "spectrometer"):
            assert f"{device}: {tmp_path / 'rig' / device}   (9600 8N1, lines end in CR LF)" in printed
        ledger = f"sqlite:///{tmp_path / 'rig.sqlite'}"
        out = subprocess.run(["selflab", "run", str(path), "--quiet", "--ledger", ledger],
                             cwd=tmp_path, env=shell_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(subprocess.run(["selflab", "status", "--ledger", ledger, "--json"], cwd=tmp_path, env=shell_env(),
                                       capture_output=True, text=True, timeout=60).stdout)
    assert status["counts"]["completed"] == 3 and status["stop_reason"] == "max_experiments", status
    assert all(0 <= r["value"] <= 1 for r in status["best"]), status


def test_a_device_file_that_cannot_be_served_is_one_line_and_exit_2(tmp_path: Path) -> None:
    no_serial = tmp_path / "tcpip.yaml"
    no_serial.write_text('spec: "1.1"\ndevices:\n  d:\n    dialogues: [{q: "A?", r: "1"}]\nresources:\n  TCPIP::10.0.0.1::INSTR: {device: d}\n')
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices: [\n")
    cases = {no_serial: "no serial resource (ASRL<n>::INSTR) to serve", broken: "YAML syntax error",
             tmp_path / "missing.yaml": "cannot read: No such file or directory"}
    for path, message in cases.items():
        out = subprocess.run(["selflab", "emulate", "--device", str(path)], env=shell_env(), capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and out.stdout == "", out
        [line] = out.stderr.splitlines()
        assert line.startswith(f"selflab emulate: {path}: ") and message in line, line


def test_a_faulty_emulated_device_checks_the_driver_s_error_mapping(tmp_path: Path) -> None:
    """The guide's hint: a second emulator with ``--faults`` gives the kit a device that garbles."""
    driver = types.ModuleType("my_lab_dosing")
    exec(compile(block("python", "# my_lab/dosing.py"), "README:my_lab/dosing.py", "exec"), driver.__dict__)
    serve = block("bash", "selflab emulate --device").strip()
    garbling = serve + """ --faults '{"rate": 1, "kinds": ["garble"]}'"""
    with emulator(serve, "/tmp/selflab-balance", tmp_path / "good"), \
            emulator(garbling, "/tmp/selflab-balance", tmp_path / "bad"):
        report = check_instrument(lambda: driver.DosingBalance(str(tmp_path / "good" / "balance"), timeout_s=0.5),
                                  {"volume_ml": 2.5},
                                  faults={BadResponse: lambda: driver.DosingBalance(str(tmp_path / "bad" / "balance"),
                                                                                    timeout_s=0.5, retries=0)})
    assert not report.failed and "fault -> BadResponse" in report.passed


def test_the_device_file_also_answers_through_pyvisa_sim() -> None:
    (snippet,) = re.findall(r"`(VisaTransport\(VisaSettings\(.*?\)\))`", GUIDE, flags=re.S)
    expression = snippet.replace("\n", " ").replace('"examples/', f'"{REPO}/examples/')  # as run from the repository
    link = eval(expression, vars(transports))

    async def session() -> list[str]:
        async with link:
            return [await link.query(c) for c in ("DOSE 2.500", "MASS?", "DOSE 9.000")]

    assert asyncio.run(session()) == ["OK", "2.5000", "ERR 2 DOSE out of range [0, 5]"]
