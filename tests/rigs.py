"""Real audio rigs for the tests (see docs/testing-rigs.md).

ALSA reads its configuration once per process, so the asoundrc is written and
`XDG_CONFIG_HOME` set when this module is imported (conftest imports it first), before any
ALSA call. File-backed PCMs read/write fixed paths under :data:`RIG_DIR` that tests fill
before opening; the PulseAudio "room" (null sink + ALSA pulse plugin) is started on demand.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from agentd.sim import speech
from agentd.sim.room import PulseRoom as PulseRoom
from agentd.sim.room import asoundrc, write_asoundrc

RIG_DIR = Path(tempfile.mkdtemp(prefix="agentd-rig-"))
CAPTURE_FILE = RIG_DIR / "capture.raw"  # testcap: S16_LE 16 kHz mono
CAPTURE48_FILE = RIG_DIR / "capture48.raw"  # testcap48: S16_LE 48 kHz stereo
PLAYBACK_FILE = RIG_DIR / "playback.raw"  # testplay: S16_LE 48 kHz mono
PULSE_SOCKET = RIG_DIR / "pulse" / "native"  # where PulseRoom(RIG_DIR / "pulse") listens
CLOCK_SO = RIG_DIR / "libasound_module_pcm_clock.so"  # tests/alsa_clock.c, built by clock_pcms()
CLOCKMIC_FILE = RIG_DIR / "clockmic.raw"  # clockmic hears it: S16_LE 48 kHz stereo, looped
CLOCKSPK_FILE = RIG_DIR / "clockspk.raw"  # what clockspk played: S16_LE 48 kHz stereo
CLOCKMIC_FREEZE = RIG_DIR / "clockmic.freeze"  # while this exists clockmic's clock stands still
CLOCKSPK_FREEZE = RIG_DIR / "clockspk.freeze"  # same for clockspk (a hung card: no xrun, no error)
# driftmic and driftspk: one card (a HAT's codec) whose clock runs this far off the system's
# (a real crystal's tens of ppm, made larger so that a test shows in a minute what a device
# meets in hours); silence in, nothing kept out
DRIFT_PPM = -1500

#: a real ALSA mixer on the room's speaker: the pulse plugin's control device, whose
#: "Master" control is the `room` sink's volume (what `agentd ctl volume` sets on `spk`)
MIXER = f'ctl.spk {{ type pulse; server "unix:{PULSE_SOCKET}"; device "room" }}'
ASOUNDRC = f"""
pcm.testcap_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{CAPTURE_FILE}"; format "raw" }}
pcm.testcap {{ type plug; slave {{ pcm "testcap_raw"; format S16_LE; rate 16000; channels 1 }} }}
pcm.testcap48_raw {{ type file; slave.pcm "null"; file "/dev/null"; infile "{CAPTURE48_FILE}"; format "raw" }}
pcm.testcap48 {{ type plug; slave {{ pcm "testcap48_raw"; format S16_LE; rate 48000; channels 2 }} }}
pcm.testplay_raw {{ type file; slave.pcm "null"; file "{PLAYBACK_FILE}"; format "raw" }}
pcm.testplay {{ type plug; slave {{ pcm "testplay_raw"; format S16_LE; rate 48000; channels 1 }} }}
{asoundrc(PULSE_SOCKET)}{MIXER}
pcm_type.clock {{ lib "{CLOCK_SO}" }}
pcm.clockmic {{ type clock; rate 48000; channels 2; file "{CLOCKMIC_FILE}"; freeze "{CLOCKMIC_FREEZE}" }}
pcm.clockspk {{ type clock; rate 48000; channels 2; file "{CLOCKSPK_FILE}"; freeze "{CLOCKSPK_FREEZE}" }}
pcm.driftmic {{ type clock; rate 48000; channels 2; ppm {DRIFT_PPM} }}
pcm.driftspk {{ type clock; rate 48000; channels 2; ppm {DRIFT_PPM} }}
"""


def install_asoundrc() -> None:
    write_asoundrc(RIG_DIR, ASOUNDRC)
    os.environ["XDG_CONFIG_HOME"] = str(RIG_DIR)
    CAPTURE_FILE.write_bytes(b"")
    CAPTURE48_FILE.write_bytes(b"")


def clock_pcms(content: np.ndarray | None = None) -> tuple[str, str]:
    """The `clockmic` and `clockspk` PCMs (tests/alsa_clock.c; `driftmic` and `driftspk` too,
    the same plugin): a sound card's clock, so they
    overrun and underrun like one when the program falls behind. ``content`` (48 kHz mono
    int16) is what clockmic hears, in a loop; clockspk's output file starts empty; neither is
    frozen (see CLOCKMIC_FREEZE). Built with gcc on first use."""
    if not CLOCK_SO.exists():
        src = Path(__file__).with_name("alsa_clock.c")
        cc = ["gcc", "-O2", "-Wall", "-DPIC", "-shared", "-fPIC", "-o", str(CLOCK_SO)]
        subprocess.run([*cc, str(src), "-lasound"], check=True)
    for f in (CLOCKMIC_FREEZE, CLOCKSPK_FREEZE):
        f.unlink(missing_ok=True)
    mono = (np.zeros(4800) if content is None else content).astype("<i2")
    np.stack([mono, mono], axis=1).tofile(CLOCKMIC_FILE)
    CLOCKSPK_FILE.write_bytes(b"")
    return "clockmic", "clockspk"


def clockspk_played() -> np.ndarray:
    """What clockspk has played so far: 48 kHz int16, one channel of its stereo."""
    return np.frombuffer(CLOCKSPK_FILE.read_bytes(), "<i2").reshape(-1, 2)[:, 0]


def espeak(text: str, rate: int, path: Path) -> np.ndarray:
    """Deterministic speech as int16 at ``rate`` (``path`` kept for callers' temp naming)."""
    return np.frombuffer(speech.espeak_pcm(text, rate), dtype="<i2").copy()


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    return speech.write_wav(path, pcm.astype("<i2").tobytes(), rate)
