"""Re-introduce known bugs one at a time in a copy of the repository and check a test catches each.

Usage:
    python scripts/mutation_check.py [--tree DIR] [--only NAME ...] [--list] [--keep] [--tests PYTEST ARGS...]

For each mutant: the tree (default: this checkout, working copy as it is, uncommitted changes
included) is copied to a temporary folder without .git, .venv and caches; the bug is applied as
text replacements (each pattern must occur exactly once, or the mutant is reported as stale);
the named tests run there with `python -m pytest -x -q`. The copy imports its own code, never
the checkout's: an editable install maps vss_edge.runtime/.exporters/.calibration to the
checkout's folders, so the copy gets symlinks vss_edge/runtime -> ../runtime (etc.), which
Python's path finder reaches before the editable finder, and the script checks where the
modules really come from before running anything. The same tests are first run on the
unmutated copy (once per distinct selection): they must pass there, or the table means nothing.

A mutant is "caught" when pytest reports failures (exit 1); an error exit (collection error,
interrupted) is reported as such. Prints a markdown table; exits 1 if a mutant was not caught.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "exporters", "calibration")  # installed as vss_edge.<name>


@dataclass
class Mutant:
    name: str
    bug: str
    edits: list[tuple[str, str, str]]  # (file, old, new)
    tests: list[str]  # pytest arguments (node ids, -k expressions)
    notes: str = ""
    extra: dict = field(default_factory=dict)


MUTANTS = [
    # --- the table (issue 22) ---------------------------------------------------------
    Mutant("gsvnet-warp-sign", "GSVNet warp() with the flow's sign flipped",
           [("vss_edge/models/gsvnet/propagation.py", "x = torch.from_numpy(xs).to(flow.device) + flow[0, 0] / 4.0",
             "x = torch.from_numpy(xs).to(flow.device) - flow[0, 0] / 4.0"),
            ("vss_edge/models/gsvnet/propagation.py", "y = torch.from_numpy(ys).to(flow.device) + flow[0, 1] / 4.0",
             "y = torch.from_numpy(ys).to(flow.device) - flow[0, 1] / 4.0")],
           ["tests/test_oracles.py", "tests/test_eval.py::test_trained_gsvnet_needs_its_flow_the_right_way_round"]),
    Mutant("gsvnet-key-image-small", "GSVNet runtime keeps the key frame's image_small (flow always against the key frame)",
           [("runtime/programs/gsvnet.py", 'self.state = {"logits": out["logits"], "image_small": out["image_small"]}',
             'self.state = {"logits": out["logits"], "image_small": out["image_small"] if is_key '
             'else self.state["image_small"]}')],
           ["tests/test_gsvnet_parity.py", "-k", "pipeline or bisenet"]),
    Mutant("stmg-keep-reversed", "STMG gates read keep reversed (block k gated by keep[K-1-k]), exporter verifier silenced",
           [("exporters/gating.py", "np.array(k, dtype=np.int64), index_name",
             "np.array(len(scopes) - 1 - k, dtype=np.int64), index_name"),
            ("exporters/onnx_export.py", "            if not ok:\n                failures.append(",
             "            if False:\n                failures.append(")],
           ["tests/test_stmg.py", "-k", "each_graph or generators or forced"]),
    Mutant("stmg-keep-negated", "STMG gates read keep negated (then/else swapped), exporter verifier silenced",
           [("exporters/gating.py", "then_branch=then_branch,\n                                else_branch=else_branch)",
             "then_branch=else_branch,\n                                else_branch=then_branch)"),
            ("exporters/onnx_export.py", "            if not ok:\n                failures.append(",
             "            if False:\n                failures.append(")],
           ["tests/test_stmg.py", "-k", "each_graph or generators or forced"]),
    Mutant("check-identical-tolerance", "the check's `identical` flag with a 0.05 absolute tolerance",
           [("calibration/check.py",
             '"identical": all(m["max_abs"] == 0.0 for m in ms),\n                }\n            else:',
             '"identical": all(m["max_abs"] <= 0.05 for m in ms),\n                }\n            else:')],
           ["tests/test_calibration_check.py"]),
    Mutant("tdnet-stored-reversed", "TDNet stored frames fed newest first",
           [("runtime/programs/tdnet.py", "entries = self.history if full else",
             "entries = self.history[::-1] if full else")],
           ["tests/test_tdnet_parity.py", "-k", "pipeline_equals or user_path"]),
    Mutant("tdnet-queue-frozen", "TDNet queue frozen after the first three frames",
           [("runtime/programs/tdnet.py", '("q", "k", "v")}])[-self.length:]', '("q", "k", "v")}])[:self.length]')],
           ["tests/test_tdnet_parity.py", "-k", "pipeline_equals or user_path"]),
    Mutant("stmg-dropped-block-runs", "a dropped STMG block that still runs (the runtime feeds keep all true)",
           [("runtime/programs/stmg.py", 'partial = run("partial", {"image": image, "keep": keep}, ())',
             'partial = run("partial", {"image": image, "keep": np.ones_like(keep)}, ())')],
           ["tests/test_stmg.py", "-k", "forced"]),
    # --- more, for the oracles and README claims this issue added -------------------------------
    Mutant("gsvnet-warp-half-flow", "GSVNet warp divides the flow by 2, not 4",
           [("vss_edge/models/gsvnet/propagation.py", "flow[0, 0] / 4.0", "flow[0, 0] / 2.0"),
            ("vss_edge/models/gsvnet/propagation.py", "flow[0, 1] / 4.0", "flow[0, 1] / 2.0")],
           ["tests/test_oracles.py", "-k", "gsvnet"]),
    Mutant("mpvss-warp-w-minus-1", "MPVSS mask warp normalised by W-1 (not the official W)",
           [("vss_edge/models/mpvss/motion.py", "x = (xs[None] + flow[:, 0]) * ((w - 1) / w)",
             "x = (xs[None] + flow[:, 0])")],
           ["tests/test_oracles.py", "-k", "mpvss"]),
    Mutant("mpvss-warp-zeros", "MPVSS per-query mask warp with zeros padding (official: border)",
           [("vss_edge/models/mpvss/motion.py", 'return bilinear_sample(masks, x, y, "border")',
             'return bilinear_sample(masks, x, y, "zeros")')],
           ["tests/test_oracles.py", "-k", "mpvss"]),
    Mutant("export-writes-unverified", "export writes a bundle whose graph does not match PyTorch",
           [("exporters/onnx_export.py", "    if failures:\n        raise ExportError(",
             "    if False:\n        raise ExportError(")],
           ["tests/test_readme_claims.py", "-k", "no_bundle or failed_export"]),
    Mutant("onnxsim-unverified", "onnxsim's result kept without checking it still matches",
           [("exporters/onnx_export.py", "            if not cand_failures:", "            if True:")],
           ["tests/test_readme_claims.py", "-k", "onnxsim"]),
    Mutant("session-outputs-unchecked", "the session does not check graph outputs against the manifest",
           [("runtime/session.py", '            ("outputs", describe(self.session.get_outputs()), self.spec.outputs),\n',
             "")],
           ["tests/test_readme_claims.py", "-k", "outputs_differ"]),
    Mutant("openvino-silent-bf16", "OpenVINO runs bf16 when the user asked for nothing (its own default)",
           [("runtime/session.py", 'return _open_on_openvino(manifest, precision or "f32", threads)',
             'return _open_on_openvino(manifest, precision or "bf16", threads)')],
           ["tests/test_openvino.py", "-k", "log_line"]),
    Mutant("mpvss-key-from-previous", "MPVSS propagates from the previous frame's image, not the key frame's",
           [("runtime/programs/mpvss.py", 'feeds = {"image": image, "key_image": key["key_image"]}',
             'feeds = {"image": image, "key_image": key["key_image"]}\n'
             '        key["key_image"] = run("keyframe", {"image": image}, ())["key_image"]')],
           ["tests/test_mpvss.py", "-k", "interval_5"]),
    # --- INT8 numerics (issue 14) ------------------------------------------------------------------
    Mutant("int8-branch-reads-folded-relu", "a Relu an If branch reads is quantised (ORT folds it; the branch reads pre-ReLU values)",
           [("calibration/graph_analysis.py", "if n.op_type in _REMOVABLE_ACTIVATIONS and n.output[0] in branch_reads",
             "if False and n.op_type in _REMOVABLE_ACTIVATIONS and n.output[0] in branch_reads")],
           ["tests/test_int8_layout.py::test_an_activation_a_gated_branch_reads_stays_float_so_the_branch_reads_it"],
           notes="the tail rule keeps STMG's Relu before an If float too; the rule is for a Relu int8 ops read as well"),
    Mutant("int8-outputs-rounded", "graph outputs leave the INT8 graph rounded to 8 bits",
           [("calibration/int8.py", "        unrounded = unround_outputs(quantized)\n", "        unrounded = []\n")],
           ["tests/test_int8_layout.py", "-k", "unrounded"]),
    Mutant("int8-tail-quantised", "ops after the last int8 Conv are quantised (they only round)",
           [("calibration/graph_analysis.py", "                and n.name not in feeds_int8):",
             "                and n.name not in feeds_int8 and False):")],
           ["tests/test_int8_layout.py", "-k", "unrounded"]),

    # --- many streams (issue 16) ----------------------------------------------------------------
    Mutant("multistream-no-stagger", "the staggered policy gives every stream phase 0 (key frames aligned)",
           [("runtime/multistream.py", "lead = stream * period // streams", "lead = 0")],
           ["tests/test_multistream.py", "-k", "ceil_n_over_k or real_streams"]),
    Mutant("multistream-shared-scheduler", "every stream runs the one scheduler object (its state shared)",
           [("runtime/multistream.py", "self.policy.stream_scheduler(_copy(scheduler), s, streams)",
             "self.policy.stream_scheduler(scheduler, s, streams)")],
           ["tests/test_multistream.py", "-k", "content_driven"]),
    Mutant("multistream-tick-half-undone", "a failed tick leaves the streams that succeeded advanced",
           [("runtime/multistream.py", "                self.pipelines[s].restore(saved[s])\n", "                pass\n")],
           ["tests/test_multistream.py", "-k", "all_or_nothing"]),
    Mutant("live-drop-uncounted", "a live frame replaced before it was taken is not counted",
           [("runtime/live.py", "                    if self._newest is not None:\n                        "
             "self.frames_dropped += 1\n", "")],
           ["tests/test_multistream.py", "-k", "live"]),
]


def _ignore(folder, names):
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", "out", "build", "dist"}
    return [n for n in names if n in skip or n.endswith(".egg-info")]


def prepare(tree: Path, work: Path) -> Path:
    """Copy tree into work/repo and make its vss_edge import its own subpackages."""
    repo = work / "repo"
    shutil.copytree(tree, repo, ignore=_ignore, symlinks=True)
    for name in PACKAGES:
        link = repo / "vss_edge" / name
        if not link.exists():
            link.symlink_to(Path("..") / name, target_is_directory=True)
    return repo


def env_for(repo: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(repo: Path) -> None:
    probe = ("import vss_edge, vss_edge.runtime, vss_edge.exporters, vss_edge.calibration, vss_edge.models;"
             "print('\\n'.join(m.__file__ for m in (vss_edge, vss_edge.runtime, vss_edge.exporters,"
             " vss_edge.calibration, vss_edge.models)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env_for(repo), capture_output=True,
                          text=True, check=True)
    for path in done.stdout.split():
        if not Path(path).resolve().is_relative_to(repo.resolve()):
            raise SystemExit(f"the copy imports {path}, not its own code: cannot check mutants")


def apply(repo: Path, mutant: Mutant) -> str | None:
    """Apply the edits; None if fine, else why the mutant is stale."""
    for file, old, new in mutant.edits:
        path = repo / file
        text = path.read_text()
        count = text.count(old)
        if count != 1:
            return f"pattern found {count} times in {file}: {old[:60]!r}"
        path.write_text(text.replace(old, new))
    return None


def run_tests(repo: Path, tests: list[str], timeout: int) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=timeout)
        rc, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f"timed out after {timeout} s\n{e.stdout or ''}"
    return rc, out, time.perf_counter() - start


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("FAILED "):
            return line[len("FAILED "):].split(" - ")[0]
    return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the tree to copy (default: this checkout)")
    parser.add_argument("--only", nargs="*", help="mutant names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per pytest run")
    parser.add_argument("--tests", nargs=argparse.REMAINDER,
                        help="pytest arguments to run instead of each mutant's own (last option)")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.tests:
        mutants = [Mutant(m.name, m.bug, m.edits, list(args.tests)) for m in mutants]
    if args.list or not mutants:
        for m in MUTANTS:
            print(f"{m.name}: {m.bug}  [{' '.join(m.tests)}]")
        return 0
    rows, missed = [], 0
    base = Path(tempfile.mkdtemp(prefix="vss-mutants-"))
    try:
        clean = prepare(args.tree, base / "baseline")
        check_imports(clean)
        baseline: dict[tuple, tuple[int, str]] = {}
        for m in mutants:
            key = tuple(m.tests)
            if key not in baseline:  # the same tests on the unmutated copy must pass
                rc, out, secs = run_tests(clean, m.tests, args.timeout)
                baseline[key] = (rc, first_failure(out) or (out.strip().splitlines() or [""])[-1])
                print(f"baseline {' '.join(m.tests)}: exit {rc} ({secs:.0f} s)", file=sys.stderr, flush=True)
                if rc != 0:
                    print(out[-3000:], file=sys.stderr)
            if baseline[key][0] != 0:
                rows.append((m, "baseline fails", baseline[key][1], 0.0))
                missed += 1
                continue
            work = base / m.name
            work.mkdir()
            repo = prepare(args.tree, work)
            check_imports(repo)
            stale = apply(repo, m)
            if stale:
                rows.append((m, "stale", stale, 0.0))
                missed += 1
                continue
            rc, out, secs = run_tests(repo, m.tests, args.timeout)
            verdict = {1: "caught", 0: "NOT caught"}.get(rc, f"error (exit {rc})")
            if rc != 1:
                missed += 1
                print(out[-3000:], file=sys.stderr)
            rows.append((m, verdict, first_failure(out), secs))
            print(f"{m.name}: {verdict} {first_failure(out)} ({secs:.0f} s)", file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("| mutant | bug | result | first failing test | s |")
    print("|---|---|---|---|---:|")
    for m, verdict, detail, secs in rows:
        print(f"| {m.name} | {m.bug} | {verdict} | {detail} | {secs:.0f} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
