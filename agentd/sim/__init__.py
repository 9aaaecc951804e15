"""The bundled realtime simulator (tests, `agentd demo`, `python -m agentd.sim`)."""

from agentd.sim.server import Faults, Simulator

__all__ = ["Faults", "Simulator"]
