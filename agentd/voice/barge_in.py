"""Voice barge-in while the device speaks, decided on the echo-cancelled microphone signal.

Pure: per frame the VAD's verdict and the cancelled frame's energy in, "barge in now" out.
Only ``echo.mode: aec`` uses it: the half-duplex mic hears the whole echo, and no energy rule
on it kept the device from interrupting itself in a real room (issue 22), so check-config
refuses ``barge_in: voice`` there.

Why the rule looks like this (measured on the echo path rig, bench/echo.py):
- AEC3 leaves residual echo 25-40 dB below the echo, but a clipping loudspeaker leaves short
  bursts (20-100 ms) as loud as -35 dBFS; a user 10 dB below the echo comes through a few dB
  quieter, and webrtcvad finds only about half of their frames. Level alone cannot separate
  them; time can: the user is voiced and above the floor for ``need_ms`` out of any
  ``window_ms``, a residual burst is not;
- the echo expected in each frame (EchoCanceller.echo_energy: the far end's envelope at the
  echo's delay and gain, found from the envelopes) tells more: what AEC3 lets through of an
  echo is a residual of it, so a frame more than ``margin_db`` below the echo expected is
  not counted. Through the real daemon and the rig (bench/echo.py --e2e, every judged frame
  kept with --features, 104 answers) the voiced frames above the floor of echo-only audio
  sat at a median 21 dB below the echo expected (the loudest, an answer's unconfirmed onset,
  2-5 dB below; settled ones up to 8 dB below, in runs of 1-2 frames), the user's in their
  first 1.5 s at a median 6 dB below (a quarter more than 15 dB below: AEC3 passes them
  mostly in the echo's pauses). Replaying those frames, -16 dB with 80 ms of evidence cut no
  answer, where without the margin 120 ms were needed and still 11 of 80 barge-in trials'
  answers cut themselves 1-1.4 s in (the run before the margin);
- a fresh canceller needs a few seconds of the device's own audio to converge (in the plain
  room its residual stayed at -25 dBFS for over a second of the first answer in some runs):
  voice barge-in is armed once it has heard ARM_S of far-end sound (the connected cue and the
  first answer after start-up; the button works meanwhile), and until WARM_S, and in the first
  ONSET_MS of every answer, more evidence (``cold_need_ms``) is asked;
- while an answer's echo delay is unconfirmed (EchoCanceller.settled) the echo may leak
  whole (an answer's first 0.3-0.5 s, a stream restarted after an underrun at 1x delivery),
  and what came meanwhile is thrown away. Keeping it instead, counting only frames at least
  as loud as the echo expected, would have made 3 of 80 barge-in trials faster (up to 1.3 s
  lost to clearing), but the one run made with it cut 10 of 13 echo-only answers at 1x in
  the plain room (none at 5x, where the stream never runs dry; the next run of 13, 0): not
  understood, so not kept (what counts there now is the last rule below: only a band well
  over the echo expected);
- and for RESETTLE_MS after the delay is (re)confirmed within an answer, ``cold_need_ms`` is
  asked, and what came meanwhile is dropped after: through the tuned AEC3 (AEC3_CONFIG, the
  run bench/barge_replay.py replays, 133 answers) an answer confirmed 0.5 s into its sound,
  as the echo estimate moved a block, leaked its echo voiced, within 10 dB of the echo
  expected, for the 260 ms after, and cut itself as the onset's cold evidence ended (820 ms
  in). Replayed, that removes it and changes no other decision but one trial's, already
  2.4 s late (it talked while unconfirmed; now past the record); on the stock AEC3's two
  recorded runs it removes 4 of 4 and 5 of 11 answers that cut themselves (and a trial of
  each then decides past what was recorded: unknown). 400 ms were not enough: in a later
  shadow run (138 answers) a trial's answer, confirmed 0.5 s into its sound, leaked its echo
  through the linear filter (4-7 dB under the echo expected) and the suppressor (-41..-49
  dBFS) 0.45-0.75 s after, which the rule with 400 ms cuts 1.5 s in (replayed; the same
  happened in the next recorded run's 137); replayed with 800 ms no answer of either run is
  cut and no trial decides later;
- that onset is counted from the answer's first sound (the canceller's far end), not from
  when the speaker became busy: the answer's first sound reaches the microphone only after the
  playout delay, the output buffer and the room (~0.5 s through the echo path rig), and
  counted from "busy" the onset was over before most of the echo had arrived;
- what the rule cannot fix: during double talk AEC3's suppressor takes the user down to its
  output floor (-69 dBFS) whenever the echo is loud; a user 10 dB below the echo mostly comes
  through only in the answer's pauses, which sets the tail of the latency at -10 dB. Through
  the tuned AEC3 the same holds at -5 dB for a soft phrase ("excuse me, can you repeat that",
  a quarter of the trials): its frames came a median 16 dB below the echo expected where the
  echo-only residual's voiced frames above the floor sat a median 25 dB below (a quarter
  within 21 dB, 5 % within 5 dB): replayed, every margin and evidence looser than -16 dB
  and 80 ms that brings the p95 of decisions under 500 ms cut 4-37 of 133 answers (at
  -20 dB with 60-80 ms: 2-5, and still ~550 ms), so the rule stays; and one answer at 5x
  delivery through the rig leaked its echo for 360 ms, 5.6 s in, settled and within 10 dB
  of the echo expected: every rule replayed cuts it (the canceller's to fix, not the rule's);
- so the user is also looked for before the suppressor. AEC3's linear filter alone
  (EchoCanceller.linear, agentd's build) keeps the user whole and leaves the rig's echo a
  median 19-22 dB below the echo expected, but voiced four frames in five (webrtcvad hears
  the residual as speech) and, where it leaks, as loud as a user at -5 dB. Through the real
  daemon and the rig (bench/echo.py --e2e --shadow: every answer and trial recorded whole, 54
  echo-only answers and 80 trials, replayed by bench/barge_replay.py), the frames only the
  linear output would count (voiced, within 10 dB of the echo expected) looked alike with
  nobody talking and in the talker's first second: the suppressor made them a median -55 and
  -52 dBFS (28 and 22 dB below the echo expected), their linear output sat a median 7 and
  6 dB below it. So such a frame counts, as ``linear_weight`` of a frame, when its
  linear output is voiced and within ``linear_margin_db`` of the echo expected and the
  suppressor let ``passed_db`` through. Counted whole, within 10 dB (the component path's
  best: p95 364 / 433 ms at -5 / -10 dB, no echo-only answer near a barge-in), the real
  daemon cut 7 of 36 echo-only answers through the rig, against 6 of 208 before. Replayed on
  the shadow run, the rule as it is fired on no echo-only answer the rule before did not (1
  of 134, a leak 15 s into the canceller's life, fires with either) and took the p95 of
  -5 dB decisions from 553 to 432 ms (-10 dB: 581 to 563); the component path's figures did
  not move. End to end (two runs) the -5 dB trials slowed by too few frames counted fell to
  3 and 2 of 40 from 7 in each of the two runs before; the rest of the tail is the
  canceller's first ~20 s after start-up (ARM_S, WARM_S) and its unconfirmed delays;
- and the user is looked for band by band. The slow -5 dB trials left were the frames the
  suppressor took 16-18 dB under the echo expected as a whole, and no looser broadband
  margin kept clear of the echo-only answers. But AEC3 takes echo away and adds none: in a
  band where its output is at least as loud as the whole echo expected there (the far end's
  bands at the echo's delay, gain and decay, EchoCanceller.over_echo_db) it is not the
  echo's residual. In a shadow run through the rig with every frame's audio kept (138
  answers, 49416 frames judged), the voiced frames above the floor that no rule counted
  reached at most 1.7 dB under the echo expected in any band with nobody talking, while a
  tenth of the talker's first 1.5 s was over it; replayed, counting such a frame whole
  (``band_margin_db`` 0) took the -5 dB p95 from 537 to 422 ms and the -10 dB one from 587
  to 559, with no answer cut that the rule before did not cut (a Hann window on the blocks
  separated worse: echo-only frames up to 6.3 dB over). Through the real daemon with 0 dB
  (runs H8, H9) the -5 dB p95 was 459 and 592 ms, but H8's echo-only answers had four
  frames 0.3-1.8 dB over (single frames, no cut of their own: the answers it cut, it cut
  replayed without the bands too), so a frame must be 3 dB over: replayed on the shadow
  run, the same 422 ms at -5 dB, 587 at -10;
- and the canceller is trusted only where its linear filter has lately shown that it removes
  the echo. In five recorded runs through the rig (bench/echo.py --e2e --features, H8-H11
  and the shadow run) the linear output of echo-only audio sat a median 18-21 dB under the
  echo expected once converged, but 5-10 dB under through the first answer the rig played
  to a fresh daemon, and ~10-13 dB for minutes after the echo path moved inside AEC3's
  filter (the rig dropped backlog; since, the delay is handed afresh on such a jump:
  agentd/audio/echo.py JUMP_BLOCKS). The first answer was cut with nobody talking at 4.4 s
  of far-end sound heard, the leak 5-12 dB under the echo expected, voiced. So while the
  median of the echo expected over the linear output (frames with an echo expected of at
  least ``record_echo_db``, over ``record_ms`` of judged audio ending ``record_lag_ms``
  before the frame: a user's own first frames would say "not removed") is under
  ``trust_db``, a frame counts only within ``untrusted_margin_db`` of the echo expected.
  Replayed (bench/barge_replay.py) with 10 dB: the shadow run's one false fire goes and no
  trial decides later; H10's goes too, but the trials it played while its filter was stuck
  (5-9 dB), as H8's during its stuck minutes (~9-10 dB), decide later or not within what
  was recorded (the leak and the user looked alike there); 12 dB sat inside the stuck
  filter's 12-13 dB of run H11 and delayed its -10 dB p95 from 586 to 1367 ms;
- and the cold evidence is asked until the canceller has heard WARM_S of far-end sound: the
  second answer through the rig, 12.7 s into a fresh canceller (its linear filter not yet at
  its converged removal: 14 dB), leaked 100 ms within 10 dB of the echo expected after a
  pause in it, in the same place in two runs (H8, H11), and cut itself with the 80 ms asked
  from 10 s on. The trials are played warmed (30 s heard), so the bench's latency figures
  do not show what this costs: 300 ms of evidence instead of 80 in a device's first ~20 s
  of speech after start-up;
- and a frame only the linear output counts weighs whole once that record shows the filter
  converged (CONVERGED_DB 14 dB; 18-21 through the rig, 9-13 stuck): then a voiced linear
  output within 6 dB of the echo expected stands ~12 dB over the filter's residual. Every
  slow -5 dB trial of seven recorded runs (25 of the 70 trials with that phrase) talked over
  the answer with "excuse me, can you repeat that", whose first 300 ms hold a 60 ms vowel
  burst and then an unvoiced "s" and a weak "kju": the burst came through the suppressor
  12-17 dB under the echo expected and through the linear filter within 6 dB of it, half
  a frame each. Replayed on the seven records (bench/barge_replay.py), whole from 12 to
  16 dB took the -5 dB p95 of decisions from 422 / 420 / never / 499 / 529 / 526 / 499 ms
  to 393 / 416 / 899 / 438 / 498 / 501 / 398 and fired on no answer the rule before did
  not (whole at any record: the same, but an echo-only answer came within 20 ms of
  evidence of a cut where it came within 40). Through the real daemon (runs H14-H17) the -5
  dB p95 was 421, 391, 398 and 440 ms, but in H17 a trial's answer cut itself with nobody
  talking: just re-confirmed after its delay was handed again (the resettle's cold
  evidence asked), AEC3 leaked its echo 4-9 dB under the echo expected for 350 ms and three
  frames only the linear output counted took the evidence from 270 to 300 ms. So in the
  cold states (an answer's onset, a resettle, before WARM_S), where the canceller is in
  flux, such a frame weighs LINEAR_WEIGHT still: replayed on all eleven records, that
  fires on no answer the rule before did not, and every p95 above stays as it is;
- and while the canceller re-fits an echo that slipped under its filter (SlipWatch moved the
  far end with it: the answer unsettled until it proves its delay again, which a user
  talking prevents) a voiced frame counts where its loudest band stands ``refit_margin_db``
  over the echo expected there (whose delay and gain still hold), and nothing else does.
  Before, voice barge-in was deaf there for up to SETTLE_MAX_S (run H60's one -5 dB miss).
  On the component path (bench/echo.py --slips: a user at -5 dB 0.2-1.2 s after a 10 or
  20 ms slip, three rooms) the voiced frames above the floor of echo-only answers in that
  state reached 9 dB over in 16 of 1566 (a user's: half 3.6 dB, a tenth 31.6 dB); replayed,
  9 dB with NEED_MS fired on none of 300 such answers (6 dB with 60 ms: one), and the user
  was heard in a median 375 / 382 ms where it was 1429 / 1536 ms before (missed 6 and 1
  times of 58 and 53, against 20 and 23). What came before the move (the slipped echo's
  own leak, counted while settled) is dropped as the answer unsettles: carried over, it
  made one more answer of 60 cut itself;
- and in every other unsettled state (an answer's onset; the echo path moved and AEC3 was
  handed its delay afresh, PathWatch; the speaker ran dry) the same band rule, with
  ``unsettled_need_ms`` of evidence asked (``cold_need_ms`` in an answer's onset). Voice
  barge-in was deaf there, up to SETTLE_MAX_S: every miss of the end-to-end runs H68-H73
  was a talker who spoke while the answer re-proved its delay, AEC3 re-learning after the
  rig dropped 20 ms of backlog (H70, H72, H73: in H73 the move came 140 ms before the
  talker's onset, the answer unsettled for the 2.2 s after) or the device ran dry (H68).
  Replayed (bench/barge_replay.py) on the twelve records H62-H73 (1645 answers, 959
  trials), 160 ms took the misses from 3 to 1 at -5 dB and from 9 to 4 at -10 dB, fired
  on no answer the rule before did not (16 of 1645, as before) and brought no
  echo-only answer closer to firing than before (per run, the closest approach the same);
  with NEED_MS instead the misses were the same, but two echo-only answers came within
  20 ms of evidence of a cut where they had come within 60 and 80, and with COLD_NEED_MS
  1 and 9 were missed.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agentd.audio.pcm import db

WINDOW_MS = 400  # evidence is counted over this much recent audio
NEED_MS = 80  # frames counted as the user's within WINDOW_MS that make a barge-in
COLD_NEED_MS = 300  # the same while the canceller is still converging
ONSET_MS = 800  # an answer's first audio, during which the canceller re-converges
ARM_S = 4.0  # far-end sound the canceller must have heard since it was made to be trusted
WARM_S = 20.0  # ... and to be trusted with NEED_MS of evidence
RESETTLE_MS = 800  # after an answer's echo delay is (re)confirmed, cold_need_ms is asked this long
FLOOR_DB = -54.0  # dBFS (mean square): a quieter cancelled frame is no user
# A cancelled frame this far below the echo expected in it (EchoCanceller.echo_energy) is no
# user either: what the canceller let through of that echo
MARGIN_DB = -16.0
# A frame of AEC3's linear output (before the suppressor) this close to the echo expected,
# voiced, counts as the user's too ...
LINEAR_MARGIN_DB = -6.0
# ... where the suppressor let the frame through above its output floor (-69 dBFS), at least
# this loud (dBFS, mean square) ...
PASSED_DB = -60.0
# ... as this much of a frame's evidence (the linear filter leaks too: a frame the suppressor
# vouches for weighs 1), or whole where the linear filter's record (below) shows it
# converged: at least CONVERGED_DB
LINEAR_WEIGHT = 0.5
CONVERGED_DB = 14.0
# A voiced cancelled frame above the floor counts whole, however far under the echo expected
# as a whole, where its loudest band is this far over the echo expected in that band
# (EchoCanceller.over_echo_db): AEC3 takes echo away, it adds none. With nobody talking, such
# frames reached -1.7, +1.8 and -0.8 dB in three recorded runs (single frames): 3 dB over
BAND_MARGIN_DB = 3.0
# While the canceller re-fits an echo that slipped (EchoCanceller.refitting: unsettled, its
# echo expected still right) a voiced frame above the floor counts only where its loudest
# band is this far over the echo expected there; nothing else counts
REFIT_MARGIN_DB = 9.0
# ... and in any other unsettled state (an answer's onset, the echo path moved and AEC3 was
# handed its delay afresh, the speaker ran dry) the same, with this much evidence asked
# (cold: COLD_NEED_MS)
UNSETTLED_NEED_MS = 160
# The canceller's record (trusted): the median of the echo expected over the linear output
# (dB) of frames with an echo expected of at least RECORD_ECHO_DB (dBFS), over RECORD_MS of
# judged audio ending RECORD_LAG_MS before the frame judged; under TRUST_DB (converged: 18-21
# dB through the rig, unconverged 5-10, stuck 9-13) a frame counts only within
# UNTRUSTED_MARGIN_DB of the echo expected. Less than RECORD_MIN_MS of such audio is no
# record (trusted: the onset's and the resettling's cold evidence guard that)
TRUST_DB = 10.0
RECORD_MS = 2000
RECORD_LAG_MS = 400
RECORD_ECHO_DB = -40.0
RECORD_MIN_MS = 200
UNTRUSTED_MARGIN_DB = -6.0


@dataclass
class BargeInPolicy:
    """One per voice gate; :meth:`reset` when the speaker falls silent."""

    window_ms: int = WINDOW_MS
    need_ms: int = NEED_MS
    cold_need_ms: int = COLD_NEED_MS
    onset_ms: int = ONSET_MS
    floor_db: float = FLOOR_DB
    margin_db: float = MARGIN_DB
    linear_margin_db: float = LINEAR_MARGIN_DB
    passed_db: float = PASSED_DB
    linear_weight: float = LINEAR_WEIGHT
    converged_db: float = CONVERGED_DB
    band_margin_db: float = BAND_MARGIN_DB
    refit_margin_db: float = REFIT_MARGIN_DB
    unsettled_need_ms: int = UNSETTLED_NEED_MS
    warm_s: float = WARM_S
    resettle_ms: int = RESETTLE_MS
    trust_db: float = TRUST_DB
    untrusted_margin_db: float = UNTRUSTED_MARGIN_DB
    record_ms: int = RECORD_MS
    record_lag_ms: int = RECORD_LAG_MS
    record_echo_db: float = RECORD_ECHO_DB
    # State (not parameters: dataclasses.replace makes a copy with none of it)
    _recent: deque[tuple[int, float]] = field(default_factory=deque, init=False)  # (ms, weight)
    _playing_ms: int = field(default=0, init=False)
    # the canceller's heard_s when the speaker became busy
    _heard0: float | None = field(default=None, init=False)
    # since the answer's first sound (None: not yet)
    _sounded_ms: int | None = field(default=None, init=False)
    # since the echo delay was confirmed (None: never unsettled)
    _settled_ms: int | None = field(default=None, init=False)
    # what the last judged frame left: evidence held and evidence asked (ms; for the replay
    # bench's closest approach, bench/barge_replay.py)
    evidence_ms: int = field(default=0, init=False)
    asked_ms: int = field(default=0, init=False)
    # the linear filter's record: (ms, echo expected over its output in dB, None: not
    # counted) of the newest judged frames; kept across answers (it is the canceller's)
    _record: deque[tuple[int, float | None]] = field(default_factory=deque, init=False)
    _record_held: int = field(default=0, init=False)

    def reset(self) -> None:
        self._recent.clear()
        self._playing_ms = 0
        self._heard0 = self._sounded_ms = self._settled_ms = None
        self.evidence_ms = self.asked_ms = 0

    def frame(
        self,
        ms: int,
        voiced: bool,
        energy: float,
        heard_s: float = math.inf,
        settled: bool = True,
        echo: float = 0.0,
        linear: tuple[bool, float] | None = None,
        over: Callable[[], float] | None = None,
        refitting: bool = False,
    ) -> bool:
        """One cancelled frame of ``ms`` while the speaker plays; ``heard_s``: far-end audio
        the canceller has heard since it was made; ``settled``: the echo's delay is confirmed
        for this answer (a sound server starts each stream with its own latency, an echo
        path may move between answers, and until the canceller matches it, echo leaks);
        ``echo``: the echo expected in the frame (mean square); ``linear``: the VAD's verdict
        and the energy of the frame after AEC3's linear filter alone (None: not known);
        ``over``: how far the frame's loudest band is over the echo expected in that band
        (dB; asked only of a frame nothing else counts: it costs a transform);
        ``refitting``: unsettled only while the canceller re-fits an echo that slipped. While
        unsettled only what stands ``refit_margin_db`` over the echo expected in a band
        counts, and (not re-fitting) ``unsettled_need_ms`` of it is asked. True completes a
        barge-in."""
        self._playing_ms += ms
        self._keep_record(ms, echo, linear)
        if self._heard0 is None:
            self._heard0 = heard_s
        if self._sounded_ms is not None:
            self._sounded_ms += ms
        elif heard_s > self._heard0 or not math.isfinite(heard_s):  # (no canceller: busy)
            self._sounded_ms = ms
        if not settled:
            if self._settled_ms != 0:  # (just unsettled: what came before is no evidence)
                self._recent.clear()
            self._settled_ms = 0
        elif self._settled_ms is not None:
            self._settled_ms += ms
            if self._settled_ms - ms <= self.resettle_ms < self._settled_ms:
                self._recent.clear()  # what leaked while just confirmed met cold_need_ms only
        if heard_s < ARM_S:
            return False
        onset = self._sounded_ms is None or self._sounded_ms <= self.onset_ms
        resettled = self._settled_ms is not None and self._settled_ms <= self.resettle_ms
        cold = onset or resettled or heard_s < self.warm_s
        if settled:
            w = self.weight(voiced, energy, echo, linear, over, cold)
        else:  # unsettled: a band well over the echo expected, nothing less
            loud = voiced and db(energy) >= self.floor_db
            w = 1.0 if loud and over is not None and over() >= self.refit_margin_db else 0.0
            cold = onset or heard_s < self.warm_s  # (not "resettled": it is not settled yet)
        self._recent.append((ms, w))
        held = sum(m for m, _ in self._recent)
        while held - self._recent[0][0] >= self.window_ms:
            held -= self._recent.popleft()[0]
        self.evidence_ms = evidence = round(sum(m * w for m, w in self._recent))
        self.asked_ms = self.cold_need_ms if cold else self.need_ms
        if not settled and not refitting:
            self.asked_ms = max(self.asked_ms, self.unsettled_need_ms)
        if evidence >= self.asked_ms:
            self._recent.clear()
            return True
        return False

    def weight(
        self,
        voiced: bool,
        energy: float,
        echo: float = 0.0,
        linear: tuple[bool, float] | None = None,
        over: Callable[[], float] | None = None,
        cold: bool = False,
    ) -> float:
        """What a cancelled frame adds to the evidence, as a part of its length. 1: voiced,
        above the floor, and not more than ``margin_db`` below the echo expected in it
        (``echo``, mean square; 0: none), or its loudest band ``band_margin_db`` over the
        echo expected there (``over``). ``linear_weight`` (1 where the linear filter's
        record is at least ``converged_db`` and the cold evidence is not asked, ``cold``):
        with an echo expected, its linear output (``linear``: voiced, energy) is voiced and
        within ``linear_margin_db`` of it, and the suppressor let ``passed_db`` through.
        Else 0; and 0 for a frame more than ``untrusted_margin_db`` under the echo expected
        while the linear filter's record does not show it removing the echo
        (:meth:`trusted`)."""
        level = db(energy)
        w = 0.0
        record: float | None = math.nan  # the linear filter's record (nan: not worked out)
        if voiced and level >= self.floor_db:
            broad = not echo or level >= db(echo) + self.margin_db
            if broad or (over is not None and over() >= self.band_margin_db):
                w = 1.0
        if not w and linear is not None and echo and level >= self.passed_db:
            linear_voiced, linear_energy = linear
            if linear_voiced and db(linear_energy) >= db(echo) + self.linear_margin_db:
                record = self.record_db()
                converged = record is not None and record >= self.converged_db
                w = 1.0 if converged and not cold else self.linear_weight
        if w and echo and level < db(echo) + self.untrusted_margin_db and not self.trusted(record):
            return 0.0
        return w

    def trusted(self, record: float | None = math.nan) -> bool:
        """The linear filter's record (``record``, as :meth:`record_db` gives it; nan: work
        it out) says it removes the echo (TRUST_DB), or there is too little of it to say."""
        if record is not None and math.isnan(record):
            record = self.record_db()
        return record is None or record >= self.trust_db

    def record_db(self) -> float | None:
        """The linear filter's record: the median of the echo expected over its output (dB)
        over ``record_ms`` of judged audio ending ``record_lag_ms`` ago; None: too little."""
        held, counted, values = 0, 0, []
        for ms, v in reversed(self._record):
            held += ms
            if held > self.record_lag_ms and v is not None:
                counted += ms
                values.append(v)
        return None if counted < RECORD_MIN_MS else statistics.median(values)

    def _keep_record(self, ms: int, echo: float, linear: tuple[bool, float] | None) -> None:
        """The frame's echo expected over its linear output into the record."""
        counted = linear is not None and echo and db(echo) >= self.record_echo_db
        self._record.append((ms, db(echo) - db(linear[1]) if counted and linear else None))
        self._record_held += ms
        while self._record_held - self._record[0][0] >= self.record_ms + self.record_lag_ms:
            self._record_held -= self._record.popleft()[0]

    def counts(
        self,
        voiced: bool,
        energy: float,
        echo: float = 0.0,
        linear: tuple[bool, float] | None = None,
        over: Callable[[], float] | None = None,
    ) -> bool:
        """The frame counts as the user's at all (:meth:`weight` above 0)."""
        return self.weight(voiced, energy, echo, linear, over) > 0
