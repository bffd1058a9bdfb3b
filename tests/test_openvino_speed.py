"""benchmarks/openvino_speed.py's judgement of `auto`: the best fixed choice is the fastest single
backend and precision whose agreement on the trained weights keeps the floor (never an auto way, never
one under the floor), and auto's trained choice runs each graph on the session of the way that runs
that choice."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import openvino_speed as bench  # noqa: E402


def _p(speedup):
    return {"speedup": speedup, "frame_ms": 100 / speedup}


def test_best_fixed_keeps_the_floor_and_auto_is_set_beside_it():
    pipelines = {"ort fp32": _p(1.0), "ort int8": _p(1.5), "ov bf16": _p(2.0), "ov int8+bf16": _p(3.0),
                 "auto": _p(1.9), "auto int8": _p(5.0)}
    agreement = {"ort int8": 0.991, "ov bf16": 0.997, "ov int8+bf16": 0.985, "auto": 0.997, "auto int8": 0.99}
    assert bench.best_fixed(pipelines, agreement) == ("ov bf16", 2.0)  # int8+bf16 is faster but under 0.99
    row = bench.auto_vs_fixed(pipelines, agreement, ("auto", "auto int8"))
    assert row == "ov bf16 2.00x | 1.90x = **0.95** of it | 5.00x = **2.50** of it"
    assert bench.best_fixed(pipelines, {"ov bf16": 0.5}) is None
    assert bench.auto_vs_fixed(pipelines, {}, ("auto",)).startswith("none keeps the floor")


def test_trained_choice_runs_each_graph_on_the_way_of_its_choice(monkeypatch):
    from vss_edge.runtime import pipeline, schedulers

    monkeypatch.setattr(pipeline, "Pipeline", lambda manifest, sessions, scheduler: SimpleNamespace(sessions=sessions))
    monkeypatch.setattr(schedulers, "choose_scheduler", lambda spec, name, interval: interval)
    manifest = SimpleNamespace(scheduler={"name": "fixed_interval"})

    def pipe(tag):
        return SimpleNamespace(manifest=manifest, sessions={"keyframe": f"{tag}/keyframe", "flow": f"{tag}/flow"})

    pipes = {w: pipe(w) for w in ("ort fp32", "ov f32", "ov bf16", "ort int8", "ov int8", "ov int8+bf16")}
    choices = {"auto": {"keyframe": ("openvino", "bf16"), "flow": ("onnxruntime", "f32")},
               "auto int8": {"keyframe": ("openvino", "f32"), "flow": ("openvino", "bf16")}}
    missing = {}
    out = bench.trained_choice_pipelines(pipes, choices, missing)
    assert not missing
    assert out["auto (trained)"].sessions == {"keyframe": "ov bf16/keyframe", "flow": "ort fp32/flow"}
    assert out["auto int8 (trained)"].sessions == {"keyframe": "ov int8/keyframe", "flow": "ov int8+bf16/flow"}
    out = bench.trained_choice_pipelines(pipes, {"auto": {"path0": ("openvino", "bf16")}}, missing)
    assert not out and "graphs differ" in missing["auto (trained)"] and missing["auto int8 (trained)"] == "no trained choice"
