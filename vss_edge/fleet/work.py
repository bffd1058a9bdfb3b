"""One video's work in a fleet, Ray-free: what a worker does with it, and how a re-run knows it is done.

A `FleetWorker` (the engine makes each one a Ray actor) loads the task's bundles once, on its
first video, and keeps the sessions for every video after it (`Pipeline.reset` between them).
Each video's outputs are the single-video verb's, in `--out/<folder>/`, written by the same code:

| verb | per-video outputs | written by |
|---|---|---|
| run | overlay.mp4 (or .avi), summary.json, labels/ with --save-labels | source_runs.run_source |
| eval | eval.json (what `eval --json` writes), eval.md (what it prints) | evaluation.evaluate_pipeline |
| check | check.json, check.md, check_agreement.png (`check --json DIR/check.json`) | calibration.check.check_pipelines, report.write_reports |

Every output is atomic (runtime.outputs). Once all of a video's outputs are in place the worker
writes the folder's stamp, `.vss-edge-fleet.json`: the job's fingerprint (verb, bundles' manifest
hashes, options, the video's path, size and modification time, its labels) and, per output, how
to verify it (a file's sha256; a video's frame count and size, decoded back; the label PNGs'
names). The stamp goes before any work on the folder starts and comes back last, so a stamp
present means outputs complete and of that job. A video is skipped only when its stamp matches
this job and every output verifies (`completed`); anything else (a killed run, an edited or
truncated file, another bundle) is done again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from vss_edge.runtime.errors import OutputError, VssEdgeError
from vss_edge.runtime.manifest import sha256_file
from vss_edge.runtime.outputs import locked_folder, remove_stale_temporaries, video_problem, write_text_atomic

STAMP = ".vss-edge-fleet.json"
VERBS = ("run", "eval", "check")
# Load options that change no label (where and how fast it runs); left out of the fingerprint.
SPEED_ONLY = ("threads", "thread_pool", "trt_cache_dir")


@dataclass(frozen=True)
class FleetTask:
    """What every video of a fleet gets. bundles: (bundle,) for run and eval, (reference, candidate)
    for check; load: runtime.load's keyword options; options: the verb's (run: save_labels,
    max_frames; eval: intervals, start, stop; check: start, stop); out: the fleet's --out."""

    verb: str
    bundles: tuple[str, ...]
    out: str
    load: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VideoJob:
    """One video to do: its place in the list, source, labels, output folder name, attempt (1 first).
    kill_at: a test hook (engine.KILL_ENV): this attempt's worker kills itself after that frame."""

    index: int
    source: str
    labels: str | None
    folder: str
    attempt: int = 1
    kill_at: int | None = None

    def again(self) -> VideoJob:
        """The next attempt (after its worker died)."""
        return replace(self, attempt=self.attempt + 1, kill_at=None)


def _stat(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(task: FleetTask, job: VideoJob) -> dict:
    """What makes a video's outputs this job's (JSON values, to compare with a stamp read back)."""
    bundles = []
    for bundle in task.bundles:
        manifest = Path(bundle) / "manifest.json"
        bundles.append(sha256_file(manifest) if manifest.is_file() else None)
    load = {k: v for k, v in sorted(task.load.items()) if k not in SPEED_ONLY}
    job_print = {"verb": task.verb, "bundles": bundles, "load": load, "options": task.options, "video": job.source,
                 "video_file": _stat(job.source), "labels": job.labels}
    return json.loads(json.dumps(job_print, default=str))


def _intact(path: Path, expected: dict) -> bool:
    """Whether one output is there and as its stamp says (sha256, a decodable video, label PNGs)."""
    try:
        if "sha256" in expected:
            return sha256_file(path) == expected["sha256"]
        if "video_frames" in expected:
            return path.is_file() and video_problem(path, expected["video_frames"], tuple(expected["size"])) is None
        if "pngs" in expected:
            names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
            return names == [f"{i:06d}.png" for i in range(expected["pngs"])] and all(
                (path / n).stat().st_size > 0 for n in names)
    except OSError:
        return False
    return False


def completed(folder: Path, expected: dict) -> dict | None:
    """The result recorded for the video in folder if its outputs are complete and this job's
    (stamp matching the expected fingerprint, every output verified), else None."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("job") != expected or not isinstance(stamp.get("outputs"), dict):
        return None
    if not all(_intact(folder / name, how) for name, how in stamp["outputs"].items()):
        return None
    return stamp.get("result")


class WorkerProgress:
    """run_source's progress object in a worker: counts the frames written (read by the engine);
    with a job's kill_at, kills its own process (SIGKILL) once that many frames are written."""

    def __init__(self, kill_at: int | None = None):
        self.frames, self.kill_at = 0, kill_at

    def update(self, done: int) -> None:
        self.frames = done
        if self.kill_at is not None and done >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        pass


class FleetWorker:
    """Does videos of one task, one at a time, keeping the bundles' sessions across them."""

    def __init__(self, task: FleetTask):
        if task.verb not in VERBS:
            raise VssEdgeError(f"unknown fleet verb {task.verb!r} (known: {', '.join(VERBS)})")
        self.task = task
        self.pipes = None
        self.current: VideoJob | None = None
        self.counter = WorkerProgress()

    def progress(self) -> dict:
        """{pid, folder, attempt, frames}: the video under way (folder None when idle) and its frames done."""
        job = self.current
        return {"pid": os.getpid(), "folder": None if job is None else job.folder,
                "attempt": None if job is None else job.attempt, "frames": self.counter.frames}

    def process(self, job: VideoJob) -> dict:
        """Do one video (or find it complete); returns its result entry: video, folder, status
        ('done', 'skipped': complete already, 'failed'), error, frames, key_frames, fps, wall_s,
        warnings and the verb's figures; 'fatal': True when the bundle itself failed to load (every
        video would fail alike)."""
        start = time.perf_counter()
        folder = Path(self.task.out) / job.folder
        expected = fingerprint(self.task, job)
        entry = {"video": job.source, "folder": job.folder, "labels": job.labels, "worker_pid": os.getpid()}
        previous = completed(folder, expected)
        if previous is not None:
            return {**previous, **entry, "status": "skipped", "wall_s": time.perf_counter() - start}
        try:
            pipes = self._pipes()
        except VssEdgeError as e:
            return {**entry, "status": "failed", "fatal": True, "error": str(e), "wall_s": time.perf_counter() - start}
        self.current, self.counter = job, WorkerProgress(job.kill_at)
        try:
            (folder / STAMP).unlink(missing_ok=True)
            figures, outputs = getattr(self, f"_{self.task.verb}")(pipes, job, folder)
            write_text_atomic(folder / STAMP, json.dumps({"job": expected, "outputs": outputs, "result": figures},
                                                         indent=1) + "\n")
        except VssEdgeError as e:
            return {**entry, "status": "failed", "error": str(e), "wall_s": time.perf_counter() - start}
        except OSError as e:  # the stamp's unlink: the folder cannot be written
            return {**entry, "status": "failed", "error": f"cannot write in '{folder}': {e.strerror or e}",
                    "wall_s": time.perf_counter() - start}
        finally:
            self.current = None
        return {**figures, **entry, "status": "done", "error": None, "wall_s": time.perf_counter() - start}

    def _pipes(self) -> list:
        if self.pipes is None:
            from vss_edge import runtime

            self.pipes = [runtime.load(bundle, **self.task.load) for bundle in self.task.bundles]
        return self.pipes

    # ---- the verbs: (figures for the report, {output name: how to verify it})

    def _run(self, pipes, job: VideoJob, folder: Path) -> tuple[dict, dict]:
        from vss_edge.runtime.sources import open_source
        from vss_edge.source_runs import run_source

        [pipe] = pipes
        save_labels = bool(self.task.options.get("save_labels"))
        pipe.reset()
        with open_source(job.source) as source:
            summary = run_source(pipe, source, folder, save_labels, self.task.options.get("max_frames"), quiet=True,
                                 progress=self.counter)
            size = source.size
        if summary["interrupted"] or summary["error"] or summary["frames_written"] != summary["frames_read"]:
            raise VssEdgeError(f"'{job.source}' did not finish: {summary['error'] or 'interrupted'}")
        video = Path(summary["outputs"]["video"])
        outputs = {"summary.json": {"sha256": sha256_file(folder / "summary.json")},
                   video.name: {"video_frames": summary["frames_written"], "size": list(size)}}
        if save_labels:
            outputs["labels"] = {"pngs": summary["labels_written"]}
        figures = {"frames": summary["frames_read"], "key_frames": summary["key_frames"], "fps": summary["fps"],
                   "warnings": summary["warnings"]}
        return figures, outputs

    def _eval(self, pipes, job: VideoJob, folder: Path) -> tuple[dict, dict]:
        from vss_edge.evaluation import evaluate_pipeline, to_markdown

        [pipe] = pipes
        o = self.task.options
        result = evaluate_pipeline(pipe, video=job.source, labels_dir=job.labels, intervals=o["intervals"],
                                   start=o.get("start", 0), stop=o.get("stop"))
        files = {"eval.json": json.dumps(result, indent=2) + "\n", "eval.md": to_markdown(result)}
        outputs = _write_files(folder, files)
        return {"frames": sum(s["frames"] for s in result["sequences"]), "key_frames": None, "fps": None,
                "warnings": [], "miou": eval_figures(result)}, outputs

    def _check(self, pipes, job: VideoJob, folder: Path) -> tuple[dict, dict]:
        from vss_edge.calibration.check import check_pipelines
        from vss_edge.calibration.report import write_reports

        ref, cand = pipes
        o = self.task.options
        result = check_pipelines(ref, cand, job.source, job.labels, o.get("start", 0), o.get("stop"))
        with output_folder(folder):
            paths = write_reports(result, folder / "check.json")
        outputs = {Path(p).name: {"sha256": sha256_file(Path(p))} for p in paths.values()}
        e2e = result["end_to_end"]
        cand_ms = e2e["speed"]["frame"]["candidate"]["mean_ms"]
        gt = e2e["ground_truth"]
        return {"frames": e2e["frames"], "key_frames": e2e["key_frames"], "fps": 1000.0 / cand_ms if cand_ms else None,
                "warnings": [], "agreement": {"miou": e2e["agreement"]["miou"],
                                              "pixel_agreement": e2e["agreement"]["pixel_agreement"]},
                "ground_truth": None if gt is None else {"reference_miou": gt["reference"]["miou"],
                                                         "candidate_miou": gt["candidate"]["miou"]}}, outputs


@contextlib.contextmanager
def output_folder(folder: Path):
    """The folder created and locked for the block (as `run` locks its --out), killed runs'
    temporary files removed. OutputError if it cannot be created."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{folder}': {e.strerror or e}") from None
    with locked_folder(folder):
        remove_stale_temporaries(folder)
        yield folder


def _write_files(folder: Path, files: dict[str, str]) -> dict:
    """Write each text file atomically into folder; {name: {"sha256"}} to verify them."""
    with output_folder(folder):
        for name, text in files.items():
            write_text_atomic(folder / name, text)
    return {name: {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()} for name, text in files.items()}


def eval_figures(result: dict) -> list[dict]:
    """An eval result's mIoU rows for the report: per interval {interval, frames_scored, mean, min,
    copy_mean, copy_min}; a round-robin method's one row {interval: 'round robin', ...} (its
    single-path figures as the copy's)."""
    rr = result.get("round_robin")
    if rr:
        return [{"interval": "round robin", "frames_scored": rr["frames_scored"], "mean": rr["method"]["mean"],
                 "min": rr["method"]["min"], "copy_mean": rr["single_path"]["mean"],
                 "copy_min": rr["single_path"]["min"]}]
    return [{"interval": row["interval"], "frames_scored": row["frames_scored"], "mean": row["method"]["mean"],
             "min": row["method"]["min"], "copy_mean": row["copy"]["mean"], "copy_min": row["copy"]["min"]}
            for row in result["intervals"]]
