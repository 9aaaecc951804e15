"""Packaging (issue 19): floors that match what the code calls, pins that meet the floors, the
installer pins what it installs and says whether anything changed, device vs demo packages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def requirements() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"].values()
    deps = [*PROJECT["dependencies"], *(d for extra in extras for d in extra)]
    return [Requirement(d) for d in deps]


def test_every_dependency_is_pinned_within_its_floor() -> None:
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} has no pin in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[name]}, outside pyproject's {req}"
        )


# What the code calls, the release that brought it, and where the code calls it: a floor below
# the release installs a version the daemon crashes on (checked: pyalsaaudio 0.10 has no avail(),
# websockets 14's asyncio connections no close_code, soxr 0.4 no ResampleStream.clear(),
# soxr 1.0 no variable-rate ResampleStream(vr=)).
NEEDS = [
    ("pyalsaaudio", "0.11", "agentd/audio/alsa.py", r"\.avail\(\)"),
    ("websockets", "15", "agentd/sim/server.py", r"\.close_code\b"),
    ("soxr", "0.5", "agentd/audio/resample.py", r"\.clear\(\)"),
    ("soxr", "1.1", "agentd/audio/resample.py", r"\bvr="),
    ("websockets", "13", "agentd/realtime/connection.py", r"websockets\.asyncio\.client"),
    ("gpiozero", "2.0", "agentd/device/gpio.py", r"gpiozero\.pins\.lgpio"),
]


@pytest.mark.parametrize(("package", "since", "path", "call"), NEEDS)
def test_floor_covers_what_the_code_calls(package: str, since: str, path: str, call: str) -> None:
    assert re.search(call, (REPO / path).read_text()), f"{path} no longer calls {call}"
    (req,) = [r for r in requirements() if canonicalize_name(r.name) == package]
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors and max(floors) >= Version(since), f"{req}: the code needs {package}>={since}"


def test_systemd_python_is_not_needed() -> None:
    """Logging reaches journald through stderr: nothing to compile against libsystemd."""
    names = {canonicalize_name(r.name) for r in requirements()}
    assert "systemd-python" not in names
    for source in (REPO / "agentd").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) systemd\b", source.read_text(), re.M), source


def apt_lists() -> dict[str, set[str]]:
    out = subprocess.run(
        [
            "bash",
            "-c",
            '. scripts/lib/setup.sh; echo "${DEVICE_APT_PACKAGES[*]}"; echo "${APT_PACKAGES[*]}"',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {"device": set(out[0].split()), "dev": set(out[1].split())}


def test_a_device_gets_no_demo_or_test_packages() -> None:
    lists = apt_lists()
    assert lists["device"] < lists["dev"]
    assert not {"espeak-ng", "pulseaudio", "pulseaudio-utils", "sox"} & lists["device"]
    assert {"gcc", "python3-dev", "libasound2-dev", "python3-venv"} <= lists["device"]
    install = (REPO / "scripts" / "install").read_text()
    assert 'ensure_apt_packages "${DEVICE_APT_PACKAGES[@]}"' in install
    assert "APT_PACKAGES[@]}" not in install.replace("DEVICE_APT_PACKAGES[@]}", "")


def run_install(repo: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(repo / "scripts" / "install"), "--root", str(root), "--no-apt", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_install_pins_what_it_installs_and_reports_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ["agentd", "scripts", "systemd"]:
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ["pyproject.toml", "constraints.txt", "README.md", "config.yaml.example"]:
        shutil.copy(REPO / name, repo / name)
    root = tmp_path / "root"

    first = run_install(repo, root, "--no-restart")
    assert first.returncode == 0, first.stderr
    last = first.stdout.splitlines()[-1]
    assert last.startswith("install: changed (") and "code" in last and "packages" in last, last

    venv = root / "opt/agentd/venv/bin/python"
    freeze = subprocess.run(
        [str(venv), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    pinned = pins()
    installed = {}
    for line in freeze:
        if line.startswith("agentd"):
            continue
        name, version = line.split("==")
        installed[canonicalize_name(name)] = Version(version)
    assert installed and all(pinned.get(n) == v for n, v in installed.items()), {
        n: (v, pinned.get(n)) for n, v in installed.items() if pinned.get(n) != v
    }

    again = run_install(repo, root, "--no-restart")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "install: unchanged", again.stdout

    (repo / "agentd" / "__init__.py").write_text(
        (repo / "agentd" / "__init__.py").read_text() + "# site patch\n"
    )
    patched = run_install(repo, root, "--no-restart")
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.splitlines()[-1] == "install: changed (code)", patched.stdout


def test_the_codec_libraries_are_named_for_debian_12_and_13(tmp_path: Path) -> None:
    """audio.wire's libraries on every device (issue 26): trixie renamed libmpg123-0 in the
    64-bit time_t transition, so the list follows /etc/os-release."""
    got = {}
    for version in ("12", "13"):
        release = tmp_path / f"os-release-{version}"
        release.write_text(f'ID=debian\nVERSION_ID="{version}"\n')
        got[version] = subprocess.run(
            ["bash", "-c", '. scripts/lib/setup.sh; echo "${DEVICE_APT_PACKAGES[*]}"'],
            cwd=REPO,
            env={**os.environ, "OS_RELEASE": str(release)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    assert {"libopus0", "libmpg123-0"} <= set(got["12"])
    assert {"libopus0", "libmpg123-0t64"} <= set(got["13"]) and "libmpg123-0" not in got["13"]
    assert "libmp3lame0" in apt_lists()["dev"] - apt_lists()["device"]  # the simulator's only
