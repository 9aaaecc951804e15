"""Voice barge-in's rule replayed offline on the frames a real e2e run judged (issue 22).

``bench/echo.py --e2e 13 40 --features F.npy`` keeps every frame the barge-in policy judged
through the real daemon, labelled (columns: tests/echo_scenes.py FEATURES). This feeds them,
answer by answer and in order, through :class:`agentd.voice.barge_in.BargeInPolicy` with given
parameters, the way the e2e's own "replayed" figures do (tests/echo_scenes.replay_decision),
and prints per SER the decision latency from the talker's onset (p95 / median, a miss counted
as never), misses, and false fires: on echo-only answers, and in trials before the talker's
onset. Pure and fast (no daemon); the figures are a replay of recorded features, not end to
end: the path from the deciding frame to the answer's last sample out adds ~40 ms
(bench/echo.py PIPE_MS), and a rule slower than the recorded one runs out of frames (the
run stopped recording at its own decision) and counts as a miss.

    .venv/bin/python bench/barge_replay.py F.npy            # today's parameters
    .venv/bin/python bench/barge_replay.py F.npy --sweep    # the sweep the rule was picked by
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agentd.voice.barge_in import BargeInPolicy, db
from tests.echo_scenes import replay_decision

GAP_S = 0.5  # frames further apart than this belong to different answers
TAIL_S = 0.2  # an echo-only answer's frames after its last far-end sound + the output buffer
# are the next question (the harness asks it when the answer is over): not judged here


@dataclass
class Answer:
    """One answer's judged frames: ``args`` as the gate hands them to the policy, ``t`` each
    frame's time from the talker's onset (s; -inf: before it, or no talker), ``ser`` the
    trial's SER (None: echo-only), ``recorded`` the run's own decision (s from the onset)."""

    args: list[
        tuple[
            float,
            bool,
            float,
            float,
            bool,
            float,
            tuple[bool, float] | None,
            Callable[[], float] | None,
        ]
    ]
    t: list[float]
    ser: float | None
    recorded: float | None


def answers(path: str | Path) -> list[Answer]:
    """The recorded frames split into answers. A trial is an answer whose frames reach the
    talker (column 0 = 1); its SER follows the e2e's order: ``trials`` at -5 dB, then -10 dB
    (a trial whose answer cut itself before the talker still takes its place)."""
    a = np.load(path)
    cut = np.where(np.diff(a[:, 9]) > GAP_S)[0] + 1
    segs = [a[s] for s in np.split(np.arange(len(a)), cut)]
    # trials: from the first answer with a talker to the last, in order
    talk = [k for k, x in enumerate(segs) if (x[:, 0] == 1).any()]
    first, last = (talk[0], talk[-1]) if talk else (len(segs), -1)
    n = last - first + 1
    out = []
    for k, x in enumerate(segs):
        trial = first <= k <= last
        if not trial:  # echo-only: drop the next question's frames after the answer
            h = x[:, 6]
            up = np.where(np.diff(h) > 0)[0]
            end = x[up[-1] + 1, 9] + TAIL_S if len(up) else x[0, 9]
            x = x[x[:, 9] <= end]
        args = [
            (
                r[2],
                bool(r[3]),
                10 ** (r[4] / 10),
                r[6],
                bool(r[7]),
                10 ** (r[5] / 10)
                if r[5] > db(0.0)
                else 0.0,  # (none expected: recorded at the floor)
                (bool(r[12]), 10 ** (r[13] / 10)) if len(r) > 13 and r[12] >= 0 else None,
                # (a record made before the bands were weighed has no such column)
                (lambda v=r[14]: float(v)) if len(r) > 14 and not np.isnan(r[14]) else None,
                len(r) > 30 and bool(r[30]),  # (re-fitting: recorded since 23a3d55)
            )
            for r in x
        ]
        t = [r[1] if r[0] == 1 else -math.inf for r in x]
        fired = [t[i] for i in range(len(x)) if x[i, 8] and t[i] >= 0]
        ser = (-5.0 if k - first < n // 2 else -10.0) if trial else None
        out.append(Answer(args, t, ser, fired[0] if fired else None))
    return out


@dataclass
class Figures:
    p95_ms: dict[float, float]
    median_ms: dict[float, float]
    missed: dict[float, int]  # of which ``beyond`` ran out of recorded frames
    beyond: dict[float, int]
    trials: dict[float, int]
    false_fires: int  # answers cut with nobody talking (echo-only, or a trial before the onset)
    judged: int  # answers judged for false fires
    closest_ms: float  # the least evidence that was still missing, with nobody talking


def replay(data: list[Answer], policy: BargeInPolicy) -> Figures:
    """``data`` through a copy of ``policy``, reset between answers as the daemon's voice
    gate does when the speaker falls silent (what it keeps across answers, the linear
    filter's record, is kept). A trial whose answer cut itself before the talker in the run
    (no talker frames recorded) counts only if the rule cuts it too."""
    lat: dict[float, list[float]] = {}
    beyond: dict[float, int] = {}
    false = 0
    closest = math.inf
    p = replace(policy)  # (its parameters; none of its state)
    for ans in data:
        p.reset()
        p.closest_ms = math.inf  # type: ignore[attr-defined]
        n0 = sum(t < 0 for t in ans.t)  # nobody talking before the n0th frame
        early, _ = replay_decision(p, ans.args[:n0], ans.t[:n0], 0.0, watch=_closest)
        if not early:  # (how close an answer that was cut came is no figure)
            closest = min(closest, p.closest_ms)  # type: ignore[attr-defined]
        false += early
        if ans.ser is None or early or n0 == len(ans.t):
            continue
        _, at = replay_decision(p, ans.args[n0:], ans.t[n0:], 0.0)
        lat.setdefault(ans.ser, []).append(math.inf if at is None else at * 1000)
        beyond[ans.ser] = beyond.get(ans.ser, 0) + (at is None and ans.recorded is not None)
    p95, med, missed, n = {}, {}, {}, {}
    for ser, v in lat.items():
        ranked = sorted(v)  # nearest rank, a miss counted as never (as bench/echo.py)
        p95[ser] = ranked[math.ceil(0.95 * len(ranked)) - 1]
        med[ser] = float(np.median(ranked))
        missed[ser] = sum(math.isinf(x) for x in v)
        n[ser] = len(v)
    return Figures(p95, med, missed, beyond, n, false, len(data), closest)


def _closest(p: BargeInPolicy, fired: bool) -> None:
    """After each frame with nobody talking: how close the rule came to firing."""
    if not fired and p.asked_ms:  # (0: no frame judged yet, before ARM_S or unsettled)
        miss = p.asked_ms - p.evidence_ms
        p.closest_ms = min(getattr(p, "closest_ms", math.inf), miss)  # type: ignore[attr-defined]


def _line(f: Figures) -> str:
    per = "; ".join(
        f"SER {s:g} dB: p95 {f.p95_ms[s]:.0f} ms, median {f.median_ms[s]:.0f} ms, "
        f"{f.missed[s]} of {f.trials[s]} missed ({f.beyond[s]} beyond the record)"
        for s in sorted(f.p95_ms, reverse=True)
    )
    return (
        f"{per}; false fires {f.false_fires} of {f.judged} answers (closest approach "
        f"otherwise: {f.closest_ms:.0f} ms of evidence short)"
    )


RAN = BargeInPolicy(trust_db=-math.inf)  # the rule the recorded run H10 ran


def check(data: list[Answer]) -> None:
    """The replay with the run's own rule against the run's own decisions."""
    same = diff = 0
    p = replace(RAN)
    for ans in data:
        p.reset()
        if ans.ser is None:
            replay_decision(p, ans.args, ans.t, 0.0)  # (its record carries on)
            continue
        _, at = replay_decision(p, ans.args, ans.t, 0.0)
        ok = (at is None and ans.recorded is None) or (
            at is not None and ans.recorded is not None and abs(at - ans.recorded) < 1e-6
        )
        same += ok
        diff += not ok
    print(
        f"  the run's rule replayed vs the run's own decisions: {same} trials the same, {diff} differ"
    )


def main(path: str) -> None:
    data = answers(path)
    print(f"replay of recorded features ({path}), decision latency (not end to end):")
    check(data)
    print(f"  the run's rule: {_line(replay(data, RAN))}")
    print(f"  today's rule:   {_line(replay(data, BargeInPolicy()))}")


def sweep(path: str) -> None:
    """The grid the rule was picked by; each rule on all trials, then on each half (blocks
    of four trials, one of each phrase, alternately: the phrases differ most)."""
    data = answers(path)
    trials = [k for k, a in enumerate(data) if a.ser is not None]
    halves = [
        [a for k, a in enumerate(data) if a.ser is None or (trials.index(k) // 4) % 2 == h]
        for h in (0, 1)
    ]
    grid = itertools.product((40, 60, 80), (-54.0,), (-16.0, -20.0, -24.0), (240, 300), (0, 400))
    for need, floor, margin, cold, resettle in grid:
        p = BargeInPolicy(
            need_ms=need,
            floor_db=floor,
            margin_db=margin,
            cold_need_ms=cold,
            resettle_ms=resettle,
        )
        print(
            f"need {need} floor {floor:g} margin {margin:g} cold {cold} resettle {resettle}: "
            f"{_line(replay(data, p))}",
            flush=True,
        )
        for h, part in enumerate(halves):
            print(f"    half {h}: {_line(replay(part, p))}", flush=True)


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sweep(sys.argv[1])
    else:
        main(sys.argv[1])
