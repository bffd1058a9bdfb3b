"""benchmarks/gpu_check.py runs end to end on the CPU (--device cpu --quick) and writes a well-formed
report, so the one command meant for a GPU machine cannot rot where there is none."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(tmp_path, *extra, timeout=300):
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--threads", "1", "--out-dir",
           str(tmp_path / "results"), "--bundle-dir", str(tmp_path / "bundles"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def test_gpu_check_on_the_cpu_writes_its_report(tmp_path):
    done = _run(tmp_path, "--methods", "gsvnet,stmg", "--full", "gsvnet", "--no-stmg-full")
    assert done.returncode == 0, done.stderr[-3000:]
    md = (tmp_path / "results" / "gpu_cpu.md").read_text()
    report = json.loads((tmp_path / "results" / "gpu_cpu.json").read_text())
    names = [s["name"] for s in report["sections"]]
    assert names == ["environment", "method gsvnet", "method stmg", "fp16 gsvnet", "fp16 stmg", "tensorrt",
                     "stmg gates", "full gsvnet", "int8 gsvnet", "int8 stmg", "multistream"]
    status = {s["name"]: s["status"] for s in report["sections"]}
    assert all(v == "ok" for n, v in status.items() if n != "multistream"), status
    assert status["multistream"] in ("ok", "skipped")
    assert md.startswith("# GPU check: CPU") and "## Summary" in md and "## method gsvnet" in md
    assert len([ln for ln in md.splitlines() if ln.startswith("| ") and " | ok | " in ln]) >= 10
    sections = {s["name"]: s["data"] for s in report["sections"]}
    for method in ("gsvnet", "stmg"):  # the same provider with and without IO binding: the same labels
        data = sections[f"method {method}"]
        assert data["frames"] == 6 and data["agreement_min"] == 1.0 and data["decisions_equal"] == 6
        assert data["state"] and all(d in ("cpu", "host") for d in data["state"].values())
        assert all(p["by_provider"] == {"CPUExecutionProvider": p["nodes"]} and p["memcpy_nodes"] == 0
                   for p in data["placement"].values() if "nodes" in p)
    fp16 = sections["fp16 gsvnet"]
    assert set(fp16["graphs"].values()) == {"fp16"} and fp16["warps_float32"] is True
    assert len(fp16["warps"]["propagation"]) == 4  # GSVNet's warp (4 corner gathers) is there, read as float32
    gates = sections["stmg gates"]
    assert gates["blocks"] == len(gates["single_block_increments_ms"]) > 0
    assert "CPUExecutionProvider" in sections["tensorrt"]["log_line"]  # no TensorRT here: the fallback line


def test_the_budget_skips_sections_with_a_note(tmp_path):
    done = _run(tmp_path, "--budget-s", "0", "--methods", "gsvnet", "--full", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "gpu_cpu.json").read_text())
    assert report["sections"] and all(s["status"] == "skipped" and "budget" in s["headline"]
                                      for s in report["sections"])


def test_the_code_line_can_be_given_where_git_is_stale(monkeypatch):
    """A lent GPU machine's copy of .git read an old commit: the caller passes the real one in."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks._common import CODE_ENV, code_version

    monkeypatch.setenv(CODE_ENV, "b871459")
    assert code_version() == "b871459 (as given in $VSS_EDGE_CODE)"
    monkeypatch.delenv(CODE_ENV)
    assert "as given" not in code_version()
