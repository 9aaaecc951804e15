"""agentd: a voice agent daemon for Raspberry Pi and other Linux edge devices."""

__version__ = "0.1.0"
