"""Fleet scale: `vss-edge fleet run|eval|check` over thousands of recordings, on Ray.

Work over many recordings is parallel per video and sequential within one (the pipeline's
state, the key-frame schedule, frame order). One video is one unit of work, done in order by
one worker that keeps its ONNX Runtime sessions across videos; each video's outputs are the
single-video verb's, in a sub-folder of --out, atomic and verified, so a re-run resumes.

| module | concern |
|---|---|
| inputs | the videos (arguments, folders, lists, manifests), their labels, their folders |
| work | one video's work (Ray-free): FleetTask, VideoJob, FleetWorker; the stamp a re-run trusts |
| engine | Ray: the runtime, workers x threads, the queue, retries, signals, progress |
| report | fleet.json and fleet.md: per video and in total |

Ray is an optional dependency (`pip install 'vss-edge[fleet]'`); importing this package does
not import it.
"""
from vss_edge.fleet.engine import INSTALL, KILL_ENV, RayRuntime, WorkerPlan, import_ray, plan_workers, run_fleet
from vss_edge.fleet.inputs import FleetVideo, list_videos
from vss_edge.fleet.report import build_report, to_markdown, write_report
from vss_edge.fleet.work import STAMP, FleetTask, FleetWorker, VideoJob, completed, fingerprint

__all__ = ["INSTALL", "KILL_ENV", "RayRuntime", "WorkerPlan", "import_ray", "plan_workers", "run_fleet", "FleetVideo",
           "list_videos", "build_report", "to_markdown", "write_report", "STAMP", "FleetTask", "FleetWorker",
           "VideoJob", "completed", "fingerprint"]
