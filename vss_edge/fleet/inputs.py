"""What a fleet runs over: the videos named on the command line and, for eval and check, each one's labels.

VIDEOS is any mix of:

| given | taken as |
|---|---|
| a video file | that video |
| a folder | every video file under it (recursively, hidden ones skipped; extensions `VIDEO_EXTENSIONS`, any case), sorted by path |
| a `.txt` file | a list: one source per line (a video file or an image folder, as `run` takes one); blank lines and lines starting with `#` skipped |
| a `.csv` or `.tsv` file | a manifest: a header row naming the column `video` and, optionally, `labels` (a folder of label PNGs named by frame index, as `eval --labels` reads them); other columns ignored |

Relative paths in a list or manifest are from its own folder. Every path is made absolute (a
Ray worker does not share the driver's working directory). A video listed twice is run once.

Labels: a manifest's `labels` entry, else with `--labels-root DIR` the folder DIR/<the video's
name without its extension>/ (`clip.mp4` -> DIR/clip/). `eval` needs labels for every video;
`check` takes them where there are some.

Each video gets its output sub-folder by `run`'s rule for several sources
(vss_edge.source_runs.stream_folders: its name without the extension; names that clash get
`-` and their 1-based position in the list), so a re-run over the same list finds its folders.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from vss_edge.runtime.errors import VssEdgeError
from vss_edge.source_runs import stream_folders

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".ts", ".wmv", ".flv")
LIST_SUFFIXES = (".txt",)
MANIFEST_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class FleetVideo:
    """One video of a fleet: its source (absolute path), its labels folder or None, its output sub-folder name."""

    source: str
    labels: str | None
    folder: str


def _absolute(path: str, base: Path) -> str:
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def _videos_under(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
    return sorted(os.path.abspath(f) for f in found)


def _read_list(path: Path) -> list[tuple[str, str | None]]:
    rows = []
    for line in _read_text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((_absolute(line, path.parent), None))
    return rows


def _read_manifest(path: Path) -> list[tuple[str, str | None]]:
    text = _read_text(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "video" not in columns:
        raise VssEdgeError(f"manifest '{path}': its header row must name a 'video' column (and optionally "
                           f"'labels'), got {reader.fieldnames or 'no header'}")
    rows = []
    for line, row in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("video"):
            if any(row.values()):
                raise VssEdgeError(f"manifest '{path}', line {line}: no video")
            continue
        labels = row.get("labels") or None
        rows.append((_absolute(row["video"], path.parent),
                     None if labels is None else _absolute(labels, path.parent)))
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VssEdgeError(f"video list '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VssEdgeError(f"cannot read video list '{path}': {getattr(e, 'strerror', None) or e}") from None


def list_videos(items: list[str], labels_root: str | None = None, labels_needed: bool = False) -> list[FleetVideo]:
    """The fleet's videos, in order, from VIDEOS as given (see the module's table).

    VssEdgeError if none is found, if a list or manifest cannot be read, or if labels_needed and a
    video has no labels (neither a manifest entry nor --labels-root). A video or labels folder that
    does not exist is not refused here: its worker reports it, and the others go on.
    """
    rows: list[tuple[str, str | None]] = []
    for item in items:
        path = Path(os.path.expanduser(item))
        suffix = path.suffix.lower()
        if path.is_dir():
            found = _videos_under(path)
            if not found:
                raise VssEdgeError(f"folder '{item}' holds no video file ({', '.join(VIDEO_EXTENSIONS)})")
            rows += [(f, None) for f in found]
        elif suffix in LIST_SUFFIXES:
            rows += _read_list(path)
        elif suffix in MANIFEST_SUFFIXES:
            rows += _read_manifest(path)
        else:
            rows.append((os.path.abspath(path), None))
    seen: dict[str, str | None] = {}
    for source, labels in rows:
        if source not in seen:
            seen[source] = labels
    if not seen:
        raise VssEdgeError(f"no videos in {' '.join(items)}")
    sources = list(seen)
    if labels_root is not None:
        root = Path(os.path.expanduser(labels_root))
        if not root.is_dir():
            raise VssEdgeError(f"--labels-root '{labels_root}' is not a folder")
        for source in sources:
            if seen[source] is None:
                seen[source] = os.path.abspath(root / Path(source.rstrip("/\\")).stem)
    if labels_needed:
        unlabelled = [s for s in sources if seen[s] is None]
        if unlabelled:
            raise VssEdgeError(f"{len(unlabelled)} video(s) have no labels, e.g. '{unlabelled[0]}': give a manifest "
                               f"(.csv/.tsv with columns video,labels) or --labels-root DIR (DIR/<video name>/)")
    return [FleetVideo(source, seen[source], folder) for source, folder in zip(sources, stream_folders(sources))]
