"""agentd: a voice agent daemon for Raspberry Pi and other Linux edge devices."""

import os

# numpy's OpenBLAS starts a thread per core that spins on after each call; agentd's arrays
# are small (10 ms to 1 s of audio) and gain nothing from them, but the spinning was the
# daemon's CPU (bench/echo.py --cpu, process time, two runs each, 2 cores): the aec path
# while speaking 8.7-9.8 -> 7.6 ms per audio-second with one thread, while the drift
# estimate runs 18.6-19.1 -> 9.3, while listening 1.17 -> 0.57. Set before numpy loads
# (agentd's entry points import this first); a setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
