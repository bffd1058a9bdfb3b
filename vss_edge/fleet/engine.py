"""Ray as a fleet's engine: one unit of work per video, each video in order on one worker.

    report = run_fleet(FleetTask("run", (bundle,), out, load={...}, options={...}), list_videos([...]))

Workers are Ray actors of `work.FleetWorker`; each loads the task's bundles on its first video
and keeps the sessions for every video it is given after (one video at a time; a video is one
task, so its frames stay in order on one worker with the pipeline's state and key-frame
schedule). The driver hands the next video in list order to whichever worker is free, so a
worker never waits while videos are left. Ray only places and runs the actors: the queue,
retries and stop are ours (a few lines), so a video's work is never split or duplicated.

Runtime: with `ray_address` the driver joins that cluster (`ray.init(address=...)`, the nodes
seeing the bundles, videos and --out at the same paths: a shared filesystem); without it, a
Ray runtime already started in this process is used as it is (tests start one per module),
else a local one is started in-process with the CPUs this process may use, and stopped at
the end. Workers x threads (ONNX Runtime intra-op threads per worker) stay within the
cluster's CPUs unless asked (`plan_workers`).

Failures: a video that fails (unreadable, corrupt part-way, labels missing) is reported with its
error and the others go on; a worker that dies (its process killed, its node lost) has its
video given again to a fresh worker, up to `retries` more times; a bundle that does not load
stops the fleet (every video would fail alike). Ctrl-C or SIGTERM: no video is started after
it, the workers are stopped at once (each output is atomic, so no file is left half-written; a
video under way counts as done only where it finished in that instant, its stamp written, else it
has no stamp and the next run does it again), and the report says which videos were not done.

Test hook: KILL_ENV="FOLDER:FRAME" (read by the driver) makes the worker doing that video's
first attempt kill its own process (SIGKILL) after FRAME frames (`run` only).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from vss_edge.fleet.inputs import FleetVideo
from vss_edge.fleet.report import build_report, write_report
from vss_edge.fleet.work import FleetTask, FleetWorker, VideoJob, completed, fingerprint
from vss_edge.runtime.errors import OutputError, VssEdgeError
from vss_edge.runtime.outputs import locked_folder, remove_stale_temporaries
from vss_edge.runtime.session import usable_cpus
from vss_edge.stop_signals import StopSignals

INSTALL = "pip install 'vss-edge[fleet]'"
KILL_ENV = "VSS_EDGE_FLEET_KILL"
POLL_S = 0.25  # how often the driver looks at stop signals
SETTLE_S = 10.0  # how long a stopped fleet waits for a killed worker to be gone (its video then counts as done
# only if it finished in that instant: its result came back or its stamp verifies)
PROGRESS_S = 1.0  # how often a live progress line asks the busy workers for their frame counts (one call each)
# A local runtime's shared-memory object store: the driver and workers exchange only paths and
# result dicts (a few KB per video), so Ray's default (30% of RAM) would only reserve memory.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024


def import_ray():
    """The ray module, or VssEdgeError saying how to install it (one line)."""
    try:
        import ray
    except ImportError:
        raise VssEdgeError(f"fleet runs on Ray, which is not installed here: {INSTALL}") from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    """workers: Ray actors; threads: ONNX Runtime intra-op threads each; cpus_per_worker: the CPUs
    each actor reserves from Ray (threads, or less where workers x threads was asked beyond the
    CPUs, so that every worker is placed); cpus: the cluster's; oversubscribed: asked beyond them."""

    workers: int
    threads: int
    cpus_per_worker: float
    cpus: int
    oversubscribed: bool


def plan_workers(cpus: int, node_cpus: int, videos: int, workers: int | None = None,
                 threads: int | None = None) -> WorkerPlan:
    """Workers and threads for `videos` videos on `cpus` CPUs (the largest node has node_cpus).

    Neither given: one worker per CPU, at most one per video, each with the CPUs left over
    (at most a node's); one given: the other from the CPUs (at least 1); both: as asked. Workers
    never outnumber the videos; workers x threads exceed the CPUs only when asked (both given,
    or more workers than CPUs).
    """
    cpus, node_cpus = max(1, int(cpus)), max(1, int(node_cpus))
    if threads is not None and threads > node_cpus:
        raise VssEdgeError(f"--threads {threads} is more than the {node_cpus} CPUs of the largest node")
    if workers is None:
        workers = max(1, cpus // (threads or 1))
    workers = max(1, min(workers, videos))
    if threads is None:
        threads = max(1, min(node_cpus, cpus // workers))
    over = workers * threads > cpus
    return WorkerPlan(workers, threads, min(float(threads), cpus / workers), cpus, over)


class RayRuntime:
    """The Ray runtime a fleet runs on, as a context manager (see the module docstring).

    started: this process started or joined it (and stops or leaves it at the end); startup_s:
    how long that took; cpus: the cluster's CPUs; node_cpus: the largest node's; nodes: alive nodes.
    """

    def __init__(self, address: str | None = None):
        self.address, self.started = address, False
        self.startup_s = 0.0

    def __enter__(self) -> RayRuntime:
        ray = import_ray()
        start = time.perf_counter()
        handlers = {}  # ray.init sets its own SIGTERM handler (exit at once): ours stay
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.getsignal(sig) for sig in StopSignals.SIGNALS}
        if not ray.is_initialized():
            quiet = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # an embedded runtime does not report usage
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:
                    ray.init(num_cpus=usable_cpus(), object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at '{self.address}'" if self.address else "a local Ray runtime"
                raise VssEdgeError(f"cannot start or join {where}: {str(e).splitlines()[0] if str(e) else e}") \
                    from None
            finally:
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)
            self.started = True
        self.startup_s = time.perf_counter() - start
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.nodes = len(nodes)
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        self.gpus = float(ray.cluster_resources().get("GPU", 0))
        self.node_cpus = max((int(n["Resources"].get("CPU", 0)) for n in nodes), default=0)
        if self.cpus < 1:
            self.__exit__(None, None, None)
            raise VssEdgeError("the Ray cluster has no CPUs to run workers on")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


class FleetProgress:
    """One stderr line over videos and frames, updated in place on a terminal, else a line per
    finished video."""

    def __init__(self, videos: int, enabled: bool):
        self.videos, self.enabled, self.tty = videos, enabled, sys.stderr.isatty()
        self.live = enabled and self.tty  # updated while videos run (else once per finished video)
        self.start = self.asked = time.perf_counter()

    def due(self) -> bool:
        """Whether to ask the workers for their frames now (live, at most every PROGRESS_S)."""
        if not self.live or time.perf_counter() - self.asked < PROGRESS_S:
            return False
        self.asked = time.perf_counter()
        return True

    def update(self, entries: dict, running_frames: int, finished: bool) -> None:
        """entries: the results so far; running_frames: the videos under way's frames (live only);
        finished: a video just finished (a log's line; a terminal's line waits for the next poll,
        which counts the frames under way too)."""
        if not self.enabled or self.tty == finished:
            return
        counts = collections.Counter(e["status"] for e in entries.values())
        frames = sum(e.get("frames") or 0 for e in entries.values() if e["status"] == "done") + running_frames
        rate = frames / max(time.perf_counter() - self.start, 1e-9)
        print(f"  videos {len(entries)}/{self.videos} ({counts['skipped']} skipped, {counts['failed']} failed)  "
              f"frames {frames}  {rate:.1f} FPS", end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self, entries: dict) -> None:
        if self.live:
            self.update(entries, 0, finished=False)
            print(file=sys.stderr)


def _jobs(videos: list[FleetVideo]) -> list[VideoJob]:
    kill = os.environ.get(KILL_ENV, "")
    folder, _, frame = kill.rpartition(":")
    return [VideoJob(i, v.source, v.labels, v.folder,
                     kill_at=int(frame) if kill and v.folder == folder and frame.isdigit() else None)
            for i, v in enumerate(videos)]


def run_fleet(task: FleetTask, videos: list[FleetVideo], *, workers: int | None = None, threads: int | None = None,
              gpus_per_worker: float = 0.0, ray_address: str | None = None, retries: int = 2,
              quiet: bool = False) -> dict:
    """Do task over videos on Ray; write and return the fleet report (report.build_report) in
    task.out (fleet.json, fleet.md). The report's `stopped_by` names the signal that stopped it;
    `error` the bundle error that did. OutputError if --out cannot be written."""
    out = Path(task.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{out}': {e.strerror or e}") from None
    # Signals are only recorded from here on (ray.init and shutdown included): the loop stops on one.
    with locked_folder(out), StopSignals(record_only=True) as stop, RayRuntime(ray_address) as runtime:
        remove_stale_temporaries(out)
        plan = plan_workers(runtime.cpus, runtime.node_cpus, len(videos), workers, threads)
        if gpus_per_worker and runtime.gpus < gpus_per_worker * plan.workers:
            raise VssEdgeError(f"{plan.workers} workers x --gpus-per-worker {gpus_per_worker:g} need "
                               f"{plan.workers * gpus_per_worker:g} GPUs; the cluster has {runtime.gpus:g}")
        if plan.oversubscribed and not quiet:
            print(f"vss-edge fleet: note: {plan.workers} workers x {plan.threads} threads on {plan.cpus} CPUs, "
                  f"as asked", file=sys.stderr)
        task = FleetTask(task.verb, task.bundles, str(out.resolve()), {**task.load, "threads": plan.threads},
                         task.options)
        start = time.perf_counter()
        entries, deaths, error = _drive(task, _jobs(videos), plan, gpus_per_worker, retries, stop,
                                        FleetProgress(len(videos), not quiet))
        wall, stopped_by = time.perf_counter() - start, stop.received  # one after this changes nothing done
        ray_info = {"address": ray_address or ("in-process" if not runtime.started else "local"),
                    "startup_s": runtime.startup_s, "nodes": runtime.nodes, "cpus": runtime.cpus}
        report = build_report(task, videos, entries, plan=plan.__dict__, ray=ray_info, wall_s=wall,
                              retries=retries, worker_deaths=deaths, stopped_by=stopped_by, error=error)
        write_report(out, report)
    return report


def _drive(task: FleetTask, jobs: list[VideoJob], plan: WorkerPlan, gpus: float, retries: int, stop: StopSignals,
           progress: FleetProgress) -> tuple[dict, list, str | None]:
    """The dispatch loop: ({index: result entry}, worker deaths, the error that stopped it or None)."""
    ray = import_ray()
    from ray.exceptions import RayActorError, RayTaskError

    actor_class = ray.remote(FleetWorker).options(num_cpus=plan.cpus_per_worker, num_gpus=gpus,
                                                  max_concurrency=2, max_restarts=0)
    idle = [actor_class.remote(task) for _ in range(plan.workers)]
    queue = collections.deque(jobs)
    running: dict = {}  # ObjectRef -> (actor, job)
    entries: dict[int, dict] = {}
    deaths: list[dict] = []
    error = None
    try:
        while (queue or running) and stop.received is None and error is None:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                running[actor.process.remote(job)] = (actor, job)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                actor, job = running.pop(ref)
                try:
                    entry = ray.get(ref)
                except RayActorError as e:  # the worker's process died (killed, out of memory, node lost)
                    if getattr(e, "actor_init_failed", False):  # it could not start (vss-edge missing on a node?)
                        error = f"a worker could not start: {str(e).strip().splitlines()[-1]}"
                        entries[job.index] = {"video": job.source, "folder": job.folder, "status": "interrupted",
                                              "attempts": job.attempt, "error": error}
                        continue
                    deaths.append({"video": job.source, "folder": job.folder, "attempt": job.attempt,
                                   "cause": str(e).strip().splitlines()[0]})
                    idle.append(actor_class.remote(task))
                    if job.attempt <= retries:
                        queue.appendleft(job.again())
                        continue
                    entry = {"video": job.source, "folder": job.folder, "status": "failed",
                             "error": f"its worker died on each of {job.attempt} attempts "
                                      f"(last: {deaths[-1]['cause']})"}
                except RayTaskError as e:  # a bug in vss-edge on this video: reported, the others go on
                    idle.append(actor)
                    cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
                    entry = {"video": job.source, "folder": job.folder, "status": "failed",
                             "error": f"internal error (a bug in vss-edge): {type(cause).__name__}: {cause}",
                             "traceback": "".join(traceback.format_exception(cause))}
                else:
                    idle.append(actor)
                    if entry.pop("fatal", False):
                        error = entry["error"]
                entries[job.index] = {**entry, "attempts": job.attempt}
                progress.update(entries, 0, finished=True)
            if progress.due():
                progress.update(entries, _running_frames(ray, running), finished=False)
    finally:
        progress.close(entries)
        for actor, job in running.values():  # stopped (or a bug in the driver): the videos under way end now
            ray.kill(actor, no_restart=True)
        for actor in idle:
            ray.kill(actor, no_restart=True)
    for ref, (actor, job) in running.items():
        entries[job.index] = _settled(ray, ref, task, job)
    for job in queue:
        entries[job.index] = {"video": job.source, "folder": job.folder, "status": "not_started",
                              "attempts": job.attempt - 1, "error": None}
    return entries, deaths, error


def _settled(ray, ref, task: FleetTask, job: VideoJob) -> dict:
    """The entry of a video under way when the fleet stopped, once its (killed) worker is gone:
    its own entry where it finished in that instant (its answer came back, or its stamp verifies),
    else 'interrupted' (no stamp: the next run does it again)."""
    try:
        entry = ray.get(ref, timeout=SETTLE_S)  # it answered before the kill took effect
    except Exception:  # noqa: BLE001 - killed (RayActorError), or not gone within SETTLE_S
        result = completed(Path(task.out) / job.folder, fingerprint(task, job))
        if result is None:
            return {"video": job.source, "folder": job.folder, "status": "interrupted", "attempts": job.attempt,
                    "error": "stopped before it finished (no stamp: the next run does it again)"}
        entry = {**result, "video": job.source, "folder": job.folder, "labels": job.labels, "status": "done",
                 "error": None}  # the stamp was written, the answer lost with the worker
    entry.pop("fatal", None)
    return {**entry, "attempts": job.attempt}


def _running_frames(ray, running: dict) -> int:
    """Frames written so far by the videos under way (0 for a worker that does not answer at once)."""
    if not running:
        return 0
    refs = [actor.progress.remote() for actor, _ in running.values()]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
    total = 0
    for ref in ready:
        try:
            total += ray.get(ref)["frames"]
        except Exception:  # noqa: BLE001  a worker that just died: its video is handled by the loop
            pass
    return total
