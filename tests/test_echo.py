"""Full duplex (issue 22): the echo canceller, its far-end tap, the barge-in policy, the echo
path rig, and the real daemon answering in the PulseAudio room without interrupting itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.sim.echo_path import EchoRig
from tests import echo_scenes, rigs
from tests.conftest import running_daemon


@pytest.fixture
def echo_rig(room: rigs.PulseRoom) -> Iterator[EchoRig]:
    rig = EchoRig(room.socket, room.env).start()
    yield rig
    rig.stop()


def _talker(room: rigs.PulseRoom, rig: EchoRig | None, tmp: Path) -> echo_scenes.Talker:
    return echo_scenes.Talker(room, rig, tmp)


@pytest.mark.parametrize("pace", [1.0, 5.0])
async def test_no_self_interruption_in_the_plain_room(
    room: rigs.PulseRoom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pace: float
) -> None:
    """The room's monitor is the mic: every answer's echo comes straight back (a pure delay).
    With aec and voice barge-in, answers delivered at real time and at 5× play whole."""
    over: dict[str, Any] = echo_scenes.config(rig=False)
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        got = await echo_scenes.echo_only_answers(h, _talker(room, None, tmp_path), 2, pace)
    print(got)
    assert got.interrupts == 0 and got.truncates == 0, got
    assert got.whole == got.asked == 2, got


@pytest.mark.parametrize("pace", [1.0, 5.0])
async def test_no_self_interruption_through_the_echo_path(
    room: rigs.PulseRoom,
    echo_rig: EchoRig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pace: float,
) -> None:
    """Speaker → reverberant room → drifting mic with noise (the rig): no answer is cut."""
    over: dict[str, Any] = echo_scenes.config(rig=True)
    async with running_daemon(tmp_path, monkeypatch, over) as h:
        got = await echo_scenes.echo_only_answers(h, _talker(room, echo_rig, tmp_path), 2, pace)
    print(got)
    assert got.interrupts == 0 and got.truncates == 0, got
    assert got.whole == got.asked == 2, got
