"""Reports of an accuracy check (calibration.check.run_check): JSON, markdown and a PNG plot.

Torch-free, no matplotlib: the plot is drawn with OpenCV. Every file is written atomically
(vss_edge.runtime.outputs.write_text_atomic / write_image_atomic).

JSON: strictly valid (no NaN/Infinity): `to_jsonable` turns every non-finite float into
null. A null sqnr with "identical": true means infinite SQNR (bit-identical outputs).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from vss_edge.runtime.errors import VssEdgeError


def to_jsonable(value):
    """A copy of value with numpy scalars/arrays as Python types and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(check: dict) -> str:
    """Strict JSON text (indent 2, trailing newline) of a check result."""
    return json.dumps(to_jsonable(check), indent=2, allow_nan=False) + "\n"


def _f(value, spec=".4f") -> str:
    if value is None:
        return "-"
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, spec)


def _group_label(check: dict) -> str:
    by = check["end_to_end"]["grouping"]["by"]
    return "distance from key frame" if by == "distance_from_key" else "path index"


def _on(bundle: dict) -> str:
    """' (openvino bf16)': the backend a side ran on, where the check records one."""
    return f" ({bundle['backend']})" if bundle.get("backend") else ""


def to_markdown(check: dict) -> str:
    """Markdown: header, per-graph table, end-to-end summary, table by distance (or path),
    per-class IoU table, ground truth (when labels were given) and a speed table."""
    ref, cand, e2e = check["reference"], check["candidate"], check["end_to_end"]
    lines = [
        f"# Accuracy check: candidate {cand['bundle']} vs reference {ref['bundle']}",
        "",
        f"{ref['method']} at {ref['width']}x{ref['height']} (width x height); video {check.get('video', '-')}, "
        f"frames {check.get('frame_range', ['-', '-'])[0]}..{check.get('frame_range', ['-', '-'])[1]} "
        f"({e2e['frames']} frames, {e2e['key_frames']} key); reference on {ref['device']}"
        f"{_on(ref)}, candidate on {cand['device']}{_on(cand)}",
        "",
        "## Per graph (same recorded reference inputs for both)",
        "",
        "| graph | precision | output | samples | SQNR mean dB | SQNR min dB | SQNR pooled dB | cosine mean "
        "| cosine min | max abs err | label agreement |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, g in check["graphs"].items():
        precision = f"{g['reference_precision']} -> {g['candidate_precision']}"
        if g.get("reference_backend", "onnxruntime f32") != g.get("candidate_backend", "onnxruntime f32"):
            precision += f" ({g['reference_backend']} -> {g['candidate_backend']})"
        if not g["outputs"]:
            lines.append(f"| {name} | {precision} | (no samples) | 0 | - | - | - | - | - | - | - |")
        for out, o in g["outputs"].items():
            if o["kind"] == "float":
                def sq(v, o=o):  # a JSON round trip turns inf into null: 'identical' says it was inf
                    return "inf" if v is None and o.get("identical") else _f(v, ".2f")

                lines.append(f"| {name} | {precision} | {out} | {o['samples']} | {sq(o['sqnr_db_mean'])} | "
                             f"{sq(o['sqnr_db_min'])} | {sq(o['sqnr_db_pooled'])} | "
                             f"{_f(o['cosine_mean'], '.6f')} | {_f(o['cosine_min'], '.6f')} | "
                             f"{_f(o['max_abs'], '.3g')} | - |")
            else:
                lines.append(f"| {name} | {precision} | {out} | {o['samples']} | - | - | - | - | - | "
                             f"{_f(o['max_abs'], '.3g')} | {_f(o['agreement_mean'])} (min {_f(o['agreement_min'])}) |")
    tc = e2e["temporal_consistency"]
    lines += [
        "",
        "SQNR 'inf': the candidate's output is identical to the reference's.",
        "",
        "## End to end (candidate labels vs reference labels)",
        "",
        f"- mIoU agreement: **{_f(e2e['agreement']['miou'])}**; pixel agreement: "
        f"{_f(e2e['agreement']['pixel_agreement'])}",
        f"- temporal consistency (pixels unchanged from the previous frame): reference {_f(tc['reference'])}, "
        f"candidate {_f(tc['candidate'])}, difference {_f(tc['difference'], '+.4f')}",
        f"- grouping: {e2e['grouping']['description']}",
    ]
    if e2e.get("key_frame_mismatches"):
        lines.append(f"- warning: {e2e['key_frame_mismatches']} frame(s) were key frames in one pipeline only")
    label = _group_label(check)
    lines += ["", f"| {label} | frames | mIoU agreement | pixel agreement |", "|---:|---:|---:|---:|"]
    for row in e2e["by_group"]:
        lines.append(f"| {row['group']} | {row['frames']} | {_f(row['miou'])} | {_f(row['pixel_agreement'])} |")
    lines += ["", "## Per-class IoU (candidate vs reference)", "",
              "| class | name | IoU | reference pixels | candidate pixels |", "|---:|---|---:|---:|---:|"]
    for row in e2e["per_class"]:
        lines.append(f"| {row['class']} | {row['name']} | {_f(row['iou'])} | {row['reference_pixels']} | "
                     f"{row['candidate_pixels']} |")
    gt = e2e.get("ground_truth")
    if gt:
        lines += ["", f"## Against ground truth ({gt['frames']} labelled frames)", "",
                  "| pipeline | mIoU | pixel accuracy |", "|---|---:|---:|",
                  f"| reference | {_f(gt['reference']['miou'])} | {_f(gt['reference']['pixel_accuracy'])} |",
                  f"| candidate | {_f(gt['candidate']['miou'])} | {_f(gt['candidate']['pixel_accuracy'])} |",
                  "", f"mIoU difference (candidate - reference): {_f(gt['miou_difference'], '+.4f')}"]
    sp = e2e["speed"]
    fr = sp["frame"]
    lines += ["", f"## Speed (first {sp['warmup_frames_skipped']} frame(s) skipped)", "",
              "| | reference | candidate | candidate / reference |", "|---|---:|---:|---:|",
              f"| frame mean ms | {_f(fr['reference']['mean_ms'], '.2f')} | {_f(fr['candidate']['mean_ms'], '.2f')} | "
              f"{_f(fr['ratio_mean'], '.3f')} |",
              f"| frame p50 ms | {_f(fr['reference']['p50_ms'], '.2f')} | {_f(fr['candidate']['p50_ms'], '.2f')} | "
              f"{_f(fr['ratio_p50'], '.3f')} |",
              f"| frame p99 ms | {_f(fr['reference']['p99_ms'], '.2f')} | {_f(fr['candidate']['p99_ms'], '.2f')} | "
              f"{_f(_ratio(fr['candidate']['p99_ms'], fr['reference']['p99_ms']), '.3f')} |"]
    for name, g in sp["graphs"].items():
        lines.append(f"| {name} mean ms ({g['reference']['calls']} calls) | {_f(g['reference']['mean_ms'], '.2f')} | "
                     f"{_f(g['candidate']['mean_ms'], '.2f')} | {_f(g['ratio'], '.3f')} |")
    return "\n".join(lines) + "\n"


def _ratio(a, b):
    return a / b if a is not None and b else None


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def plot_agreement(check: dict, path, size: tuple[int, int] = (720, 460)) -> None:
    """Write a PNG: mIoU agreement (y, auto-scaled) and pixel agreement vs distance from the
    key frame (x; path index for methods without key frames), with axes, ticks, labels, a
    legend and a title. Drawn with OpenCV; written atomically."""
    from vss_edge.runtime.outputs import write_image_atomic

    rows = check["end_to_end"]["by_group"]
    xs = [r["group"] for r in rows]
    series = [("mIoU agreement", [r["miou"] for r in rows], (200, 90, 30)),
              ("pixel agreement", [r["pixel_agreement"] for r in rows], (40, 140, 40))]
    values = [v for _, ys, _ in series for v in ys if v is not None]
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 90, 30, 80, 70
    x0, x1, y0, y1 = left, w - right, h - bottom, top  # y0 = bottom pixel row of the plot area
    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (215, 215, 215)

    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-6:  # flat: a 0.05 window, topped at 1 for agreements that are exactly 1
        lo, hi = lo - 0.05, (hi if hi == 1.0 else hi + 0.05)
    step = _nice_step(hi - lo)
    lo_t, hi_t = math.floor(lo / step - 1e-9) * step, math.ceil(hi / step + 1e-9) * step
    if hi <= 1.0 < hi_t:
        hi_t = 1.0  # agreements are fractions: no axis above 1 (1 is a multiple of every nice step)
    if hi_t <= lo_t:
        hi_t = lo_t + step
    exp = math.floor(math.log10(step))
    decimals = max(0, -exp + (1 if abs(step / 10 ** exp - 2.5) < 1e-9 else 0))
    xmin, xmax = (min(xs), max(xs)) if xs else (0, 1)
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1

    def px(x):
        return int(round(x0 + (x - xmin) / (xmax - xmin) * (x1 - x0 - 20) + 10))

    def py(y):
        return int(round(y0 - (y - lo_t) / (hi_t - lo_t) * (y0 - y1)))

    n_ticks = int(round((hi_t - lo_t) / step))
    for i in range(n_ticks + 1):
        y = lo_t + i * step
        cv2.line(img, (x0, py(y)), (x1, py(y)), grey, 1)
        cv2.line(img, (x0 - 5, py(y)), (x0, py(y)), black, 1)
        text = f"{y:.{decimals}f}"
        (tw, th), _ = cv2.getTextSize(text, font, 0.45, 1)
        cv2.putText(img, text, (x0 - 8 - tw, py(y) + th // 2), font, 0.45, black, 1, cv2.LINE_AA)
    every = max(1, math.ceil(len(xs) / 20))  # at most ~20 tick labels
    for j, x in enumerate(xs):
        cv2.line(img, (px(x), y0), (px(x), y0 + 5), black, 1)
        if j % every:
            continue
        (tw, th), _ = cv2.getTextSize(str(x), font, 0.45, 1)
        cv2.putText(img, str(x), (px(x) - tw // 2, y0 + 10 + th), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x1, y0), black, 1)
    cv2.line(img, (x0, y0), (x0, y1), black, 1)

    for k, (name, ys, colour) in enumerate(series):
        pts = [(px(x), py(y)) for x, y in zip(xs, ys) if y is not None]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        lx, ly = x1 - 330 + 170 * k, top - 14  # legend: one row above the plot area
        cv2.line(img, (lx, ly - 4), (lx + 25, ly - 4), colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (lx + 32, ly), font, 0.45, black, 1, cv2.LINE_AA)

    label = _group_label(check)
    (tw, _), _ = cv2.getTextSize(label, font, 0.5, 1)
    cv2.putText(img, label, ((x0 + x1 - tw) // 2, h - 18), font, 0.5, black, 1, cv2.LINE_AA)
    ylab = np.full((24, 200, 3), 255, np.uint8)
    cv2.putText(ylab, "agreement", (10, 17), font, 0.5, black, 1, cv2.LINE_AA)
    ylab = cv2.rotate(ylab, cv2.ROTATE_90_COUNTERCLOCKWISE)
    yc = (y0 + y1) // 2 - 100
    img[yc:yc + 200, 8:32] = ylab
    method = check["reference"]["method"]
    title = f"{method}: candidate vs reference, agreement by {label}"
    (tw, _), _ = cv2.getTextSize(title, font, 0.6, 1)
    cv2.putText(img, title, (max(5, (w - tw) // 2), 32), font, 0.6, black, 1, cv2.LINE_AA)
    write_image_atomic(path, img)


def write_reports(check: dict, out) -> dict[str, str]:
    """Write the JSON, markdown and PNG reports of a check; returns {"json", "markdown", "plot"}: paths.

    out: a path ending in .json (the markdown and plot go beside it: NAME.md, NAME_agreement.png)
    or a folder (created if its parent exists) receiving check.json, check.md and
    check_agreement.png. VssEdgeError if the folder cannot be used.
    """
    out = Path(out)
    if out.suffix.lower() == ".json":
        folder, stem = out.parent, out.stem
    else:
        folder, stem = out, "check"
        if not folder.exists():
            if not folder.parent.is_dir():
                raise VssEdgeError(f"cannot write reports to '{folder}': folder '{folder.parent}' does not exist")
            folder.mkdir()
    if not folder.is_dir():
        raise VssEdgeError(f"cannot write reports to '{out}': '{folder}' is not a folder")
    from vss_edge.runtime.outputs import write_text_atomic

    paths = {"json": folder / f"{stem}.json", "markdown": folder / f"{stem}.md",
             "plot": folder / f"{stem}_agreement.png"}
    write_text_atomic(paths["json"], to_json(check))
    write_text_atomic(paths["markdown"], to_markdown(check))
    plot_agreement(check, paths["plot"])
    return {k: str(v) for k, v in paths.items()}
