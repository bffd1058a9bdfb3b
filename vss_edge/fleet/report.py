"""A fleet's report: per video and in total, as JSON (fleet.json) and markdown (fleet.md), both atomic.

Per video (`per_video`, in list order): video, folder, status, error, frames, key_frames, fps
(the verb's own: run's pipeline FPS, check's candidate FPS; eval has none), wall_s, attempts,
warnings, and eval's `miou` rows or check's `agreement` / `ground_truth`. Status:

| status | meaning |
|---|---|
| done | done by this run |
| skipped | complete already (verified: work.completed), not done again |
| failed | its error says why (unreadable, corrupt part-way, labels missing, its worker died on every attempt) |
| interrupted | under way when a signal (or a bundle error) stopped the fleet; done again by the next run |
| not_started | still queued then |

In total: counts by status; frames and key frames of the videos complete (done or skipped);
`pipeline_fps` (those frames over their summed time in the verb's pipeline: what one worker
does), `throughput_fps` (frames done by this run over its wall time: what the fleet did, reading,
writing and Ray included); eval: per interval the mean over videos of each video's mean mIoU,
the lowest video and the copy baseline's mean; check: agreement mIoU mean and lowest over videos,
pixel agreement mean, and the ground truth's mIoU means where videos had labels. Means are over
videos (each video counts once, whatever its length), not of a pooled confusion matrix.
"""
from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

from vss_edge.runtime.outputs import write_text_atomic

STATUSES = ("done", "skipped", "failed", "interrupted", "not_started")
REPORT_JSON, REPORT_MD = "fleet.json", "fleet.md"


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _lowest(entries, value):
    """{folder, value} of the entry whose value(entry) is lowest (None if none has one)."""
    scored = [(value(e), e["folder"]) for e in entries if value(e) is not None]
    if not scored:
        return None
    low, folder = min(scored)
    return {"folder": folder, "value": low}


def _eval_totals(entries: list[dict]) -> list[dict]:
    rows = collections.OrderedDict()
    for e in entries:
        for row in e.get("miou") or ():
            rows.setdefault(row["interval"], []).append((e, row))
    return [{"interval": interval, "videos": len(pairs), "mean": _mean(r["mean"] for _, r in pairs),
             "lowest_video": _lowest([{**e, "row": r} for e, r in pairs], lambda x: x["row"]["mean"]),
             "copy_mean": _mean(r["copy_mean"] for _, r in pairs)} for interval, pairs in rows.items()]


def _check_totals(entries: list[dict]) -> dict:
    scored = [e for e in entries if e.get("agreement")]
    labelled = [e for e in scored if e.get("ground_truth")]
    return {"videos": len(scored),
            "agreement_miou": _mean(e["agreement"]["miou"] for e in scored),
            "lowest_video": _lowest(scored, lambda e: e["agreement"]["miou"]),
            "pixel_agreement": _mean(e["agreement"]["pixel_agreement"] for e in scored),
            "ground_truth": None if not labelled else {
                "videos": len(labelled),
                "reference_miou": _mean(e["ground_truth"]["reference_miou"] for e in labelled),
                "candidate_miou": _mean(e["ground_truth"]["candidate_miou"] for e in labelled)}}


def build_report(task, videos: list, entries: dict[int, dict], *, plan: dict, ray: dict, wall_s: float, retries: int,
                 worker_deaths: list[dict], stopped_by: int | None, error: str | None) -> dict:
    """The report of a fleet over `videos` (list order) from its result entries by position."""
    per_video = [entries[i] for i in range(len(videos))]
    counts = collections.Counter(e["status"] for e in per_video)
    complete = [e for e in per_video if e["status"] in ("done", "skipped")]
    frames = sum(e.get("frames") or 0 for e in complete)
    timed = [e for e in complete if e.get("fps")]
    pipeline_s = sum(e["frames"] / e["fps"] for e in timed)
    done_frames = sum(e.get("frames") or 0 for e in per_video if e["status"] == "done")
    report = {
        "verb": task.verb, "bundles": list(task.bundles), "out": task.out, "options": task.options,
        "load": {k: v for k, v in task.load.items() if v is not None},
        "ray": ray, "workers": plan, "retries": retries, "worker_deaths": worker_deaths,
        "videos": len(per_video), "counts": {s: counts.get(s, 0) for s in STATUSES},
        "frames": frames,
        "key_frames": None if task.verb == "eval" else sum(e.get("key_frames") or 0 for e in complete),
        "pipeline_fps": sum(e["frames"] for e in timed) / pipeline_s if pipeline_s else None,
        "throughput_fps": done_frames / wall_s if wall_s > 0 and done_frames else None,
        "wall_s": wall_s,
        "stopped_by": None if stopped_by is None else signal.Signals(stopped_by).name,
        "error": error,
    }
    if task.verb == "eval":
        report["accuracy"] = _eval_totals(complete)
    elif task.verb == "check":
        report["accuracy"] = _check_totals(complete)
    report["per_video"] = per_video
    return report


def _f(value, spec=".1f", scale=1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _pct(value) -> str:
    return _f(value, ".1f", 100.0)


def _named(lowest: dict | None) -> str:
    return "-" if lowest is None else f"{lowest['folder']} {_pct(lowest['value'])}"


def to_markdown(r: dict) -> str:
    """The report as markdown: what ran, totals, accuracy (eval, check), a row per video, what was not done."""
    c, w, ray = r["counts"], r["workers"], r["ray"]
    lines = [f"# vss-edge fleet {r['verb']}: {r['videos']} videos", "",
             f"{' vs '.join(r['bundles'])}; Ray {ray['address']} ({ray['nodes']} node(s), {ray['cpus']} CPUs, "
             f"ready in {ray['startup_s']:.1f} s); {w['workers']} worker(s) x {w['threads']} thread(s); "
             f"{r['wall_s']:.1f} s" + (f"; stopped by {r['stopped_by']}" if r["stopped_by"] else ""), "",
             f"{c['done']} done, {c['skipped']} skipped (complete already), {c['failed']} failed, "
             f"{c['interrupted']} interrupted, {c['not_started']} not started; {len(r['worker_deaths'])} worker "
             f"death(s) (retries: up to {r['retries']} per video)", "",
             f"{r['frames']} frames" + ("" if r["key_frames"] is None else f" ({r['key_frames']} key)") +
             f"; {_f(r['pipeline_fps'])} FPS in the pipeline (one worker), {_f(r['throughput_fps'])} FPS end to end "
             f"(this run, all workers)", ""]
    if r["error"]:
        lines += [f"stopped: {r['error']}", ""]
    if r["verb"] == "eval" and r["accuracy"]:
        lines += ["| interval | videos | mean mIoU % (mean over videos) | lowest video | copy mean % |",
                  "|---:|---:|---:|---|---:|"]
        for row in r["accuracy"]:
            lines.append(f"| {row['interval']} | {row['videos']} | {_pct(row['mean'])} | "
                         f"{_named(row['lowest_video'])} | {_pct(row['copy_mean'])} |")
        lines.append("")
    if r["verb"] == "check" and r["accuracy"]["videos"]:
        a = r["accuracy"]
        lines.append(f"agreement with the reference over {a['videos']} videos: mIoU {_pct(a['agreement_miou'])} % "
                     f"(mean), lowest {_named(a['lowest_video'])} %; pixel agreement "
                     f"{_pct(a['pixel_agreement'])} %")
        if a["ground_truth"]:
            g = a["ground_truth"]
            lines.append(f"ground truth on {g['videos']} labelled videos: mIoU reference {_pct(g['reference_miou'])} %,"
                         f" candidate {_pct(g['candidate_miou'])} % (means over videos)")
        lines.append("")
    extra = {"eval": "mIoU % (mean) by interval", "check": "agreement mIoU % | GT mIoU % ref / cand"}.get(r["verb"])
    header = "| video | status | frames | key | FPS | " + (f"{extra} | " if extra else "") + "s | attempts |"
    lines += ["## Per video", "", header, "|" + "---|" * (header.count("|") - 1)]
    for e in r["per_video"]:
        cells = [e["folder"], e["status"], str(e.get("frames") if e.get("frames") is not None else "-"),
                 str(e.get("key_frames") if e.get("key_frames") is not None else "-"), _f(e.get("fps"))]
        if r["verb"] == "eval":
            cells.append(" / ".join(f"{row['interval']}: {_pct(row['mean'])}" for row in e.get("miou") or ()) or "-")
        elif r["verb"] == "check":
            gt = e.get("ground_truth")
            cells.append(f"{_pct((e.get('agreement') or {}).get('miou'))} | "
                         + ("-" if not gt else f"{_pct(gt['reference_miou'])} / {_pct(gt['candidate_miou'])}"))
        cells += [_f(e.get("wall_s")), str(e.get("attempts", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    not_done = [e for e in r["per_video"] if e["status"] in ("failed", "interrupted", "not_started")]
    if not_done:
        lines += ["", "## Not done", ""]
        lines += [f"- {e['folder']} ({e['video']}): {e['status']}" + (f": {e['error']}" if e.get("error") else "")
                  for e in not_done]
    warned = [e for e in r["per_video"] if e.get("warnings")]
    if warned:
        lines += ["", "## Warnings", ""] + [f"- {e['folder']}: {w}" for e in warned for w in e["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> tuple[Path, Path]:
    """Write out/fleet.json and out/fleet.md, each atomically; their paths."""
    paths = Path(out) / REPORT_JSON, Path(out) / REPORT_MD
    write_text_atomic(paths[0], json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(paths[1], to_markdown(report))
    return paths
