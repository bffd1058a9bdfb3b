"""STMG's runtime compute budget: keep_threshold and max_blocks change the blocks a non-key frame
runs as set (trained STMG, real frames), without a re-export; the key-frame rate is the
scheduler's; a bad value or a method without a budget is one clear error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.cli import main
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.sources import sample_clip_path

pytest.importorskip("torch")
FRAMES = slice(20, 32)  # the trained generator varies its keep vector here (conftest.trained_stmg)


def _kept(bundle, frames, **budget):
    """(blocks run on each non-key frame, labels of every frame, the budget report)."""
    pipe = runtime.load(bundle, device="cpu", interval=3, budget=budget)
    kept, labels = [], []
    for frame in frames:
        result = pipe.step(frame)
        labels.append(result.labels)
        if not result.is_key:
            kept.append(int(np.count_nonzero(pipe.program.last_keep)))
    return kept, labels, pipe.program.budget_report()


def test_the_budget_sets_the_blocks_a_non_key_frame_runs(trained_stmg, sample_frames):
    _, bundle = trained_stmg
    frames = sample_frames[FRAMES]
    free, free_labels, report = _kept(bundle, frames)
    blocks = report["blocks"]
    assert report["keep_threshold"] is None and report["mean_kept_blocks"] == np.mean(free)
    none, none_labels, _ = _kept(bundle, frames, max_blocks=0)
    assert none == [0] * len(free)
    capped, _, capped_report = _kept(bundle, frames, max_blocks=1)
    assert all(k <= 1 for k in capped) and capped_report["max_blocks"] == 1
    everything, _, _ = _kept(bundle, frames, keep_threshold=1e-6)
    assert everything == [blocks] * len(free)  # every probability exceeds 1e-6
    strict, _, _ = _kept(bundle, frames, keep_threshold=0.999999)
    assert sum(strict) <= sum(free) <= sum(everything)
    # Fewer blocks change the non-key labels, never the key frames' (interval 3: frames 0, 3, 6, 9).
    assert all(np.array_equal(free_labels[i], none_labels[i]) for i in range(0, len(frames), 3))
    if sum(free):
        assert any(not np.array_equal(a, b) for a, b in zip(free_labels, none_labels))


def test_bad_budgets_are_one_clear_error(trained_stmg, gsvnet_bundle):
    _, bundle = trained_stmg
    with pytest.raises(VssEdgeError, match=r"keep_threshold must be in \(0, 1\)"):
        runtime.load(bundle, device="cpu", budget={"keep_threshold": 1.5})
    with pytest.raises(VssEdgeError, match=r"max_blocks must be an int in 0\.\.6"):
        runtime.load(bundle, device="cpu", budget={"max_blocks": 7})
    with pytest.raises(VssEdgeError, match="method 'gsvnet' has no compute budget option max_blocks"):
        runtime.load(gsvnet_bundle, device="cpu", budget={"max_blocks": 1})


def test_the_cli_takes_the_budget_and_the_summary_records_it(trained_stmg, tmp_path, capsys):
    _, bundle = trained_stmg
    out = tmp_path / "run"
    assert main(["-q", "run", str(bundle), str(sample_clip_path()), "--out", str(out), "--max-frames", "8",
                 "--interval", "2", "--max-blocks", "2", "--keep-threshold", "0.3", "--threads", "1"]) == 0
    budget = json.loads((out / "summary.json").read_text())["compute_budget"]
    assert budget["max_blocks"] == 2 and budget["keep_threshold"] == 0.3 and budget["mean_kept_blocks"] <= 2
    assert main(["-q", "run", str(bundle), str(sample_clip_path()), "--out", str(tmp_path / "bad"),
                 "--max-blocks", "9"]) == 2
    assert "max_blocks must be an int in 0..6" in capsys.readouterr().err
