"""agentd's build of pywebrtc-audio (issue 22): the venv runs it (scripts/lib/setup.sh builds
the pinned sdist with scripts/lib/pywebrtc-audio-aec3-config.patch), its AEC3 config does
something and refuses what it does not know, and `check-config` says when `echo.mode: aec`
runs on the stock wheel instead."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentd.audio import echo
from agentd.audio.pcm import saturate
from agentd.config import from_mapping
from agentd.config.validate import check_echo_build
from tests.test_packaging import pins

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "scripts" / "lib" / "pywebrtc-audio-aec3-config.patch"
RATE = 16000
BLOCK = RATE // 100


def agentds_version() -> str:
    """What scripts/lib/setup.sh's aec3_version names the build: the pin, then the patch's hash."""
    digest = hashlib.sha256(PATCH.read_bytes()).hexdigest()[:8]
    return f"{pins()['pywebrtc-audio']}+agentd.{digest}"


def test_the_venv_runs_agentds_build_of_the_current_patch() -> None:
    """A stale build (an older patch) or PyPI's wheel fails here: rerun scripts/test."""
    assert importlib.metadata.version("pywebrtc-audio") == agentds_version()
    assert echo.configurable(echo.library())


def test_setup_names_the_build_as_this_test_does() -> None:
    out = subprocess.run(
        ["bash", "-c", ". scripts/lib/setup.sh; aec3_version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == agentds_version()


def cancel(config: dict[str, Any] | None, seconds: float = 4.0) -> np.ndarray:
    """AEC3 on a far end of noise bursts whose echo (delayed 12 ms, a decaying tail) is the
    microphone, with a quieter near-end tone in the second half: the cancelled output."""
    rng = np.random.default_rng(22)
    n = int(seconds * RATE)
    far = rng.normal(0, 3000, n) * (np.arange(n) // (RATE // 4) % 2)
    tail = np.exp(-np.arange(1600) / 300.0) * rng.normal(0, 0.05, 1600)
    tail[192] += 0.5
    near = np.convolve(far, tail)[:n]
    near[n // 2 :] += 800 * np.sin(2 * np.pi * 440 * np.arange(n - n // 2) / RATE)
    far16, near16 = (saturate(x) for x in (far, near))
    lib = echo.library()
    aec = (
        lib.EchoCanceller(RATE, 1) if config is None else lib.EchoCanceller(RATE, 1, config=config)
    )
    out = [aec.process(near16[i : i + BLOCK], far16[i : i + BLOCK]) for i in range(0, n, BLOCK)]
    return np.concatenate(out)


def test_a_config_field_changes_what_aec3_does() -> None:
    stock = cancel(None)
    assert np.array_equal(cancel({}), stock)  # no field: the released wheel's computation
    # our aligner's delay instead of AEC3's estimator: the echo is gone from the first half
    external = cancel({"delay.use_external_delay_estimator": True})
    assert (
        np.abs(external[: len(stock) // 2]).mean() < 0.5 * np.abs(stock[: len(stock) // 2]).mean()
    )
    # the suppressor's masks up: it cuts less (echo and tone alike get through louder)
    transparent = cancel({"suppressor.normal_tuning.mask_lf.enr_transparent": 0.5})
    assert np.abs(transparent).mean() > 1.5 * np.abs(stock).mean()


def subnormals_survive() -> bool:
    """Whether this thread's floating-point mode keeps subnormal numbers (IEEE's default;
    flush-to-zero and denormals-are-zero take them to 0)."""
    tiny = np.array([1e-39], np.float32)  # under float32's smallest normal (1.18e-38)
    return bool((tiny * np.float32(1.5))[0] != 0)


def test_webrtc_runs_without_subnormals_and_hands_the_thread_back_as_it_was() -> None:
    """The build flushes subnormals to zero while WebRTC runs (upstream's DenormalDisabler:
    on a silent reference, between phrases, AEC3 otherwise costs x86 ~1.5x as much,
    bench/echo.py --cpu), and gives the caller's thread its own mode back: numpy's
    arithmetic after a call must be IEEE's, not WebRTC's."""
    assert subnormals_survive()
    stock = cancel(None, seconds=1.0)  # far-end bursts and silences: the filters' states decay
    assert stock.size and subnormals_survive()
    lib = echo.library()
    ns = lib.NoiseSuppressor(RATE, 1, level=1)
    ns.process(np.zeros(BLOCK * 2, np.int16))
    assert subnormals_survive()
    agc = lib.GainController(RATE, 1, max_gain_db=12.0)
    agc.process(np.zeros(BLOCK * 2, np.int16))
    assert subnormals_survive()
    # the build's header says why it is there (the patch, not a compiler flag: a flag would
    # change the mode of the whole process, numpy's included)
    assert "ScopedNoDenormals no_denormals;" in PATCH.read_text()


def test_the_build_hands_out_its_linear_filters_output() -> None:
    """What voice barge-in weighs besides the suppressed output (agentd/voice/barge_in.py):
    per sample processed, the echo less what the linear filter models, with the near end
    whole; the suppressor's output has the echo, and much of the near end, taken down."""
    rng = np.random.default_rng(22)
    n = 6 * RATE
    far = rng.normal(0, 3000, n)  # sound all along: the near end talks over the echo
    tail = np.exp(-np.arange(1600) / 300.0) * rng.normal(0, 0.05, 1600)
    tail[192] += 0.5
    echo_ = np.convolve(far, tail)[:n]
    tone = np.zeros(n)
    tone[n // 2 :] = 600 * np.sin(2 * np.pi * 440 * np.arange(n - n // 2) / RATE)
    far16, near16 = (saturate(x) for x in (far, echo_ + tone))
    config = {**echo.AEC3_CONFIG, "delay.use_external_delay_estimator": True}
    aec = echo.library().EchoCanceller(RATE, 1, config=config)
    out, linear = [], []
    step = 2 * BLOCK
    for i in range(0, n, step):
        out.append(aec.process(near16[i : i + step], far16[i : i + step]))
        linear.append(aec.linear())
        assert linear[-1].dtype == np.int16 and linear[-1].shape == out[-1].shape
    o, lin = (np.concatenate(x).astype(np.float64) for x in (out, linear))

    def level(x: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(x**2) + 1e-9))

    settled = slice(2 * RATE, n // 2)  # echo only, the filter converged
    assert level(lin[settled]) < level(echo_[settled]) - 15  # the linear filter took the echo
    assert level(o[settled]) < level(lin[settled]) - 3  # and the suppressor more
    talk = slice(n // 2 + RATE, n)  # the tone over the echo: whole before the suppressor,
    assert level(lin[talk]) > max(level(tone[talk]), level(lin[settled])) - 0.5
    assert level(o[talk]) < level(lin[talk]) - 6  # which took it down with the echo
    # any length, as process() takes it
    assert aec.process(near16[:250], far16[:250]).shape == aec.linear().shape == (250,)


def test_the_linear_output_is_asked_for_in_the_config() -> None:
    lib = echo.library()
    with pytest.raises(ValueError, match="export_linear_aec_output"):
        lib.EchoCanceller(RATE, 1, config={}).linear()
    with pytest.raises(ValueError, match="sample_rate 16000 and one channel"):
        lib.EchoCanceller(48000, 1, config={"filter.export_linear_aec_output": True})


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"filter.main.length_blockz": 40}, "filter.main.length_blockz"),
        ({"delay.num_filters": 0}, "delay.num_filters"),
    ],
)
def test_a_field_aec3_cannot_take_raises_naming_it(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        echo.library().EchoCanceller(RATE, 1, config=config)


class StockLib:
    """PyPI's pywebrtc-audio 0.2.0 as far as the check can tell: no ``config`` argument."""

    class EchoCanceller:
        def __init__(self, sample_rate: int, num_channels: int, stream_delay_ms: int = 0) -> None:
            pass


def test_the_stock_wheel_is_a_warning_for_aec_only() -> None:
    aec = from_mapping({"echo": {"mode": "aec"}})
    warnings: list[str] = []
    check_echo_build(aec, warnings, StockLib)
    (warning,) = warnings
    assert warning.startswith("echo.mode: aec runs on the stock pywebrtc-audio wheel")
    assert "voice barge-in and double talk" in warning
    assert "sudo scripts/install --extras aec" in warning
    for cfg, lib in [(from_mapping({}), StockLib), (aec, echo.library())]:
        quiet: list[str] = []
        check_echo_build(cfg, quiet, lib)
        assert quiet == []


class OldBuild:
    """agentd's build before the linear output: takes AEC3's config, has no ``linear``."""

    class EchoCanceller:
        def __init__(
            self, sample_rate: int, num_channels: int, stream_delay_ms: int = 0, config: Any = None
        ) -> None:
            if config and "filter.export_linear_aec_output" in config:
                raise ValueError("unknown AEC3 config field: filter.export_linear_aec_output")
            lib = echo.library()
            self.aec = lib.EchoCanceller(sample_rate, num_channels, stream_delay_ms, config=config)

        def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
            out: np.ndarray = self.aec.process(near, far)
            return out


def test_an_older_agentd_build_runs_tuned_without_the_linear_output() -> None:
    """A device that pulled a newer agentd without rerunning scripts/install: AEC3 still runs
    AEC3_CONFIG (less the linear output), barge-in goes without it, and check-config says
    to rebuild."""
    from agentd.audio.frame import AudioFrame
    from agentd.config.validate import AEC_INSTALL

    warnings: list[str] = []
    check_echo_build(from_mapping({"echo": {"mode": "aec"}}), warnings, OldBuild)
    (warning,) = warnings
    assert warning.startswith("echo.mode: aec runs on an older build of agentd's")
    assert "linear output" in warning and AEC_INSTALL in warning
    frame = AudioFrame(np.full(320, 300, np.int16).tobytes(), RATE, timestamp=0.0)
    old = echo.EchoCanceller(echo.EchoSetup(aec=True), lib=OldBuild)
    assert old.tuned and not old.linear_out
    old.process(frame)
    assert old.linear() is None
    ours = echo.EchoCanceller(echo.EchoSetup(aec=True))
    assert ours.tuned and ours.linear_out
    ours.process(frame)
    got = ours.linear()
    assert got is not None and got.shape == (320,)


def check_config(
    tmp_path: Path, mode: str, site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / f"{mode}.yaml"
    conf.write_text(f"api: {{url: ws://127.0.0.1:1/v1/realtime}}\necho: {{mode: {mode}}}\n")
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    return subprocess.run(
        [sys.executable, "-m", "agentd", "check-config", "--config", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_check_config_names_the_build_and_warns_on_the_stock_one(tmp_path: Path) -> None:
    """Through the real command: agentd's build is named on the OK line, with no warning; a
    module shaped like the stock wheel first on the path makes the warning appear."""
    ours = check_config(tmp_path, "aec")
    assert ours.returncode == 0, ours.stderr
    assert f"; aec: pywebrtc-audio {agentds_version()}" in ours.stdout
    assert "warning: echo.mode" not in ours.stderr

    site = tmp_path / "site"
    (site / "pywebrtc_audio").mkdir(parents=True)
    (site / "pywebrtc_audio" / "__init__.py").write_text(
        "class EchoCanceller:\n"
        "    def __init__(self, sample_rate, num_channels, stream_delay_ms=0):\n"
        "        pass\n"
    )
    stock = check_config(tmp_path, "aec", site)
    assert stock.returncode == 0, stock.stderr
    assert "warning: echo.mode: aec runs on the stock pywebrtc-audio wheel" in stock.stderr
    assert "sudo scripts/install --extras aec" in stock.stderr

    half = check_config(tmp_path, "half_duplex", site)
    assert half.returncode == 0 and "warning: echo.mode" not in half.stderr, half.stderr
    assert "; aec:" not in half.stdout
