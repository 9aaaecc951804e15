"""Experiment for issue 22: bench/echo.py's component figures with AEC3's own config.

Not part of agentd. Runs ERLE, double talk, component false barge-ins and CPU with a
pywebrtc-audio built from the 0.2.0 sdist plus ``scripts/aec3-config.patch`` (its
``EchoCanceller`` takes ``config={"dotted.field": value}``), put first on the path by
``--site``; ``--stock`` runs the released wheel from the venv instead. The named config is
handed to every ``EchoCanceller`` the daemon's code makes (the module attribute is
wrapped), so bench/echo.py runs unchanged. Usage:

    .venv/bin/python scripts/aec3_config_bench.py --site /tmp/aec3cfg/site CONFIG [PARTS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench, tests: the checkout's

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    # our FarEnd timeline + Aligner already align the far end: skip AEC3's matched filters
    "extdelay": {"delay.use_external_delay_estimator": True},
    "extdelay16": {"delay.use_external_delay_estimator": True, "stream_delay_ms": 16},
    "filters2": {"delay.num_filters": 2},
    "filters3": {"delay.num_filters": 3},
    # the suppressor toward transparency: the normal tuning's masks up (no gain cut until
    # the residual echo-to-nearend ratio is higher: a), the nearend state (its transparent
    # tuning) entered sooner and held longer (b), both (c), masks far up (d); the residual
    # echo estimated from a better trusted linear filter (ERLE caps, 6/1.8 dB by default: e, f)
    "supp_a": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 0.5,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 0.7,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.15,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.25,
    },
    "supp_b": {
        "suppressor.dominant_nearend_detection.enr_threshold": 1.0,
        "suppressor.dominant_nearend_detection.snr_threshold": 10.0,
        "suppressor.dominant_nearend_detection.trigger_threshold": 6,
        "suppressor.dominant_nearend_detection.hold_duration": 100,
    },
    "supp_c": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 0.5,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 0.7,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.15,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.25,
        "suppressor.dominant_nearend_detection.enr_threshold": 1.0,
        "suppressor.dominant_nearend_detection.snr_threshold": 10.0,
        "suppressor.dominant_nearend_detection.trigger_threshold": 6,
        "suppressor.dominant_nearend_detection.hold_duration": 100,
    },
    "supp_d": {
        "suppressor.normal_tuning.mask_lf.enr_transparent": 1.0,
        "suppressor.normal_tuning.mask_lf.enr_suppress": 1.5,
        "suppressor.normal_tuning.mask_hf.enr_transparent": 0.3,
        "suppressor.normal_tuning.mask_hf.enr_suppress": 0.6,
        "suppressor.normal_tuning.max_dec_factor_lf": 0.5,
    },
    "supp_e": {"erle.max_l": 8.0, "erle.max_h": 3.0},
    "supp_f": {"erle.max_l": 16.0, "erle.max_h": 8.0},
    # the linear filter longer than the room's reverberation (13 blocks: 52 ms; RT60 0.3 s)
    "long26": {"filter.main.length_blocks": 26, "filter.shadow.length_blocks": 26},
    "long40": {"filter.main.length_blocks": 40, "filter.shadow.length_blocks": 40},
}
EXT = {"delay.use_external_delay_estimator": True}
CONFIGS["ext_long26"] = EXT | CONFIGS["long26"]
CONFIGS["ext_long40"] = EXT | CONFIGS["long40"]
CONFIGS["ext_supp_a"] = EXT | CONFIGS["supp_a"]
CONFIGS["ext_supp_c"] = EXT | CONFIGS["supp_c"]
CONFIGS["long40_supp_a"] = CONFIGS["long40"] | CONFIGS["supp_a"]
CONFIGS["ext_supp_e"] = EXT | CONFIGS["supp_e"]
CONFIGS["ext_long40_supp_a"] = CONFIGS["ext_long40"] | CONFIGS["supp_a"]
CONFIGS["ext_long40_supp_f"] = CONFIGS["ext_long40"] | CONFIGS["supp_f"]
CONFIGS["ext_supp_b"] = EXT | CONFIGS["supp_b"]
# the suppressor's masks at Validate()'s limit: what the linear filter alone removes
CONFIGS["linear"] = {
    f"suppressor.{t}.mask_{b}.{k}": v
    for t in ("normal_tuning", "nearend_tuning")
    for b in ("lf", "hf")
    for k, v in (("enr_transparent", 99.0), ("enr_suppress", 100.0))
}
CONFIGS["ext_long40_linear"] = CONFIGS["ext_long40"] | CONFIGS["linear"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", help=f"one of {', '.join(CONFIGS)}, or a JSON object")
    ap.add_argument("parts", nargs="*", default=["erle", "dt", "barge", "cpu"])
    ap.add_argument("--site", help="the patched build's directory, first on sys.path")
    ap.add_argument("--stock", action="store_true", help="the venv's released wheel")
    ap.add_argument("--extra", default="{}", help="JSON fields added to the config")
    ap.add_argument("--drift", type=float, default=100.0, help="ppm, for erle and dt (the rig's)")
    a = ap.parse_args()
    if a.site and not a.stock:
        sys.path.insert(0, a.site)
    import pywebrtc_audio

    cfg = dict(CONFIGS[a.config] if a.config in CONFIGS else json.loads(a.config))
    cfg.update(json.loads(a.extra))
    native = pywebrtc_audio.EchoCanceller
    if not a.stock:
        aec3 = {k: v for k, v in cfg.items() if k != "stream_delay_ms"}
        delay = int(cfg.get("stream_delay_ms", 0))  # AEC3's external delay (ms, 4 ms steps)

        def made(*args: Any, **kw: Any) -> Any:
            return native(*args, stream_delay_ms=delay, config=aec3, **kw)

        pywebrtc_audio.EchoCanceller = made
    elif cfg:
        raise SystemExit("the stock wheel takes no config")

    from bench import echo

    out: dict[str, Any] = {"config": a.config, "lib": pywebrtc_audio.__file__, "drift": a.drift}
    out.update(cfg)
    for part in a.parts:
        t = time.process_time()
        if part == "erle":
            out.update(echo.erle_figures(drift_ppm=a.drift))
        elif part == "dt":
            out.update(echo.double_talk_figures(drift_ppm=a.drift))
        elif part == "barge":
            out.update(echo.barge_figures())
        elif part == "cpu":
            out.update(echo.cpu_figures(runs=4))
        out[f"bench_cpu_s_{part}"] = time.process_time() - t
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
