"""Each part takes its own settings (issue 20, point 4): the pure modules never see the whole
``Config``, and a reload rebuilds only the parts whose own settings object changed."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import yaml

from agentd.config import from_mapping
from agentd.realtime import dialects
from agentd.realtime.codec import SessionSettings
from agentd.voice import gate as vg
from tests.harness import Harness

AGENTD = Path(__file__).resolve().parents[1] / "agentd"

#: The pure modules and the one I/O adapter with settings of its own (Gpio).
OWN_SETTINGS = ("conversation.py", "voice/gate.py", "realtime/codec.py", "device/gpio.py")


def test_pure_modules_never_see_the_whole_config() -> None:
    for rel in (*OWN_SETTINGS, "realtime/dialects.py"):
        tree = ast.parse((AGENTD / rel).read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.alias)}
        assert "Config" not in names, f"agentd/{rel} takes the whole Config"


def test_the_settings_objects_follow_only_their_sections() -> None:
    base = from_mapping({})
    other = from_mapping({"turn": {"max_turn_s": 12}, "led": {"pin": 5}, "sounds": {"volume": 0.1}})
    assert SessionSettings.of(base.api, base.agent, base.turn) == SessionSettings.of(
        other.api, other.agent, other.turn
    )
    assert vg.VoiceSettings.of(base.turn.mode, base.vad, base.echo) == vg.VoiceSettings.of(
        other.turn.mode, other.vad, other.echo
    )
    xstar = from_mapping({"api": {"dialect": "xstar", "output_format": "Raw16KHz16BitMonoPcm"}})
    s = SessionSettings.of(xstar.api, xstar.agent, xstar.turn)
    assert (s.input_format, s.output_format) == ("Raw16KHz16BitMonoPcm", "Raw16KHz16BitMonoPcm")
    assert dialects.output_rate(xstar.api) == 16000 and dialects.input_rate(xstar.api) == 16000


async def _reload(h: Harness, **sections: dict[str, object]) -> None:
    data = yaml.safe_load(h.daemon.config_path.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    h.daemon.config_path.write_text(yaml.safe_dump(data))
    assert (await h.daemon._control("reload"))["ok"] is True


async def test_reload_rebuilds_only_what_its_settings_changed(harness: Harness) -> None:
    """A turn limit is the state machine's alone: no session.update and the same voice gate.
    New instructions are the session's: one session.update. A hangover is the gate's: a new
    gate, and still no session.update."""
    h = harness
    await h.until(lambda: h.sim.client_events("session.update"))
    updates = len(h.sim.client_events("session.update"))
    gate = h.daemon.gate
    await _reload(h, turn={"max_turn_s": 12})
    await asyncio.sleep(0.5)
    assert h.daemon.conv.max_turn_s == 12
    assert len(h.sim.client_events("session.update")) == updates
    assert h.daemon.gate is gate and h.daemon._next_gate is None

    await _reload(h, agent={"instructions": "Be terse."})
    await h.until(lambda: len(h.sim.client_events("session.update")) == updates + 1)
    assert h.daemon.gate is gate

    await _reload(h, vad={"hangover_ms": 800})
    await h.until(lambda: h.daemon.gate is not gate)
    assert h.daemon.gate.s.hangover_ms == 800
    await asyncio.sleep(0.5)
    assert len(h.sim.client_events("session.update")) == updates + 1
