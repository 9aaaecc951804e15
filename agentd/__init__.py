"""agentd: a voice agent daemon for Raspberry Pi and other Linux edge devices."""

import os

# numpy's OpenBLAS starts a thread per core that spins on after each call; agentd's arrays
# are small (10 ms to 1 s of audio) and gain nothing from them, but the spinning was the
# daemon's CPU: the aec path while speaking 17.6 -> 7.7 ms per audio-second with one thread,
# AEC3 timed alone after it 6.5 -> 3.5 (bench/echo.py, process time). Set before numpy
# loads (agentd's entry points import this first); a setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
