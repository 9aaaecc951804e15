"""One place per concept (issue 20): the wheel holds no test-only code, int16↔float has one
scale, and the control commands come from one table the socket, the CLI and the daemon read."""

from __future__ import annotations

import ast
import asyncio
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agentd import control
from agentd import conversation as cv
from agentd.audio.pcm import SCALE, to_float, to_int16
from agentd.cli import build_parser
from tests.harness import Harness

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The .py files of the wheel `pip wheel .` builds from a clean copy of this tree (a
    build/ left in the tree would carry deleted modules along): name → source."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    shutil.copytree(REPO / "agentd", src / "agentd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("agentd-*.whl")
    with zipfile.ZipFile(whl) as z:
        return {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py")}


def test_the_wheel_holds_the_package_and_nothing_else(wheel_modules: dict[str, str]) -> None:
    source = {str(p.relative_to(REPO)) for p in (REPO / "agentd").rglob("*.py")}
    assert set(wheel_modules) == source


def test_every_top_level_name_in_the_wheel_is_used_by_the_wheel(
    wheel_modules: dict[str, str],
) -> None:
    """A function or class that only tests or benches call is test-only code: it belongs in
    tests/ or bench/, not on every device. (The room oracles were such code.)"""
    defined: dict[str, str] = {}
    used: set[str] = set()
    for path, text in wheel_modules.items():
        tree = ast.parse(text)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined[f"{path}:{node.name}"] = node.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rsplit(".", 1)[-1])
    entry_points = {"agentd/cli.py:main"}  # [project.scripts]
    unused = sorted(k for k, name in defined.items() if name not in used and k not in entry_points)
    assert not unused, f"defined in the wheel, used only outside it: {unused}"


def test_int16_float_round_trip_is_exact_with_one_scale() -> None:
    every = np.arange(-32768, 32768, dtype="<i2")
    x = to_float(every.tobytes())
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == (SCALE - 1) / SCALE
    assert np.array_equal(np.frombuffer(to_int16(x), "<i2"), every)
    assert np.array_equal(to_float(every), x)  # arrays and bytes alike
    assert to_float(every.tobytes() + b"\x01").size == every.size  # a torn sample is dropped
    y = np.linspace(-1, 1, 1001, dtype=np.float32)
    assert np.abs(to_float(to_int16(y)) - y).max() <= 1 / SCALE
    loud = np.frombuffer(to_int16(np.array([2.0, -2.0, 0.5], np.float32), gain=0.5), "<i2")
    assert loud.tolist() == [32767, -32768, 8192]


def test_no_other_module_scales_int16_by_hand() -> None:
    """12 copies once used ÷32768 one way and ×32767 the other; agentd.audio.pcm is the one."""
    found = [
        f"{p.relative_to(REPO)}:{i}"
        for d in ("agentd", "tests", "bench")
        for p in (REPO / d).rglob("*.py")
        if p.name not in ("pcm.py", "test_layout.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\b3276[78](\.0)?\b", line)
    ]
    assert not found, found


# ------------------------------------------------------------------------ control commands


@pytest.fixture
def new_command(monkeypatch: pytest.MonkeyPatch) -> str:
    """A command added to the one table, and nowhere else."""
    monkeypatch.setitem(control.COMMANDS, "listen", control.Command("a new one", cv.Talk()))
    return "listen"


def test_the_cli_offers_every_command(new_command: str) -> None:
    assert new_command in control.COMMANDS
    for name in control.COMMANDS:
        assert build_parser().parse_args(["ctl", name]).command == name


async def test_the_daemon_answers_every_command(harness: Harness, new_command: str) -> None:
    """Through the real socket: every name in the table, a new one included, gets an answer
    from the daemon, not an unknown-command or internal error."""
    path = harness.daemon.cfg.control.socket
    for name in [*control.COMMANDS, "unmute"]:
        args = {"text": "hello"} if name in control.COMMANDS and control.COMMANDS[name].text else {}
        answer = await asyncio.to_thread(control.request, path, name, **args)
        assert answer.get("ok") is True, (name, answer)
    assert control.parse_request(b'{"cmd": "nope"}')[0] is None
