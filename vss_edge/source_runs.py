"""Sources through pipelines into outputs: the frame loops of `vss-edge run` and `profile`.

One source (`run_source`) writes the single-run layout into --out:

    overlay.mp4 (overlay.avi for an odd width or height), labels/NNNNNN.png (--save-labels), summary.json

Many sources (`run_sources`) write that layout per source into a sub-folder named after it
(`stream_folders`), and at the top a summary.json of the whole run: per stream, and per tick
(runtime.profiling.TickStats); `profile_sources` gives the same figures without writing. All of
them run one loop (`drive`) over ticks: read each stream's next frame, segment the tick's frames
(the streams together, on MultiStream's worker threads), write each stream's outputs, then look
at the stop signals. A frame read is segmented and written, or the stream that read it ends
with an error that says so: every frame read gives exactly one output.

A stream that fails (its source unreadable or corrupt part-way, a frame the bundle cannot take,
an output that cannot be written) ends alone, its outputs finished as a single run's would be;
the others go on. Live (`live=True`): each source is decoded on a thread of its own and every
tick takes each one's newest frame (runtime.live); the frames dropped meanwhile are counted and
the capture-to-labels latency measured.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path

from vss_edge.runtime.errors import FrameError, OutputError, SourceError, VssEdgeError
from vss_edge.runtime.live import LiveFrames
from vss_edge.runtime.outputs import (
    AtomicVideoWriter,
    locked_folder,
    overlay,
    remove_stale_temporaries,
    write_image_atomic,
    write_text_atomic,
)
from vss_edge.runtime.profiling import LatencyStats, RunStats, TickStats
from vss_edge.runtime.session import describe_backends
from vss_edge.stop_signals import Interrupted, StopSignals, signal_number

LABEL_NAME = re.compile(r"(\d{6,})\.png")


class Progress:
    """One stderr line updated in place (on a terminal) or every 50 frames or ticks (in a log)."""

    def __init__(self, total: int | None, enabled: bool, unit: str = "frame"):
        self.total, self.enabled, self.unit, self.tty = total, enabled, unit, sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled or not done or (not self.tty and done % 50):
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        end = "\r" if self.tty else "\n"
        print(f"  {self.unit} {done}{of}  {rate:.1f} {'FPS' if self.unit == 'frame' else 'ticks/s'}", end=end,
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def video_name(size: tuple[int, int]) -> str:
    """overlay.mp4, or overlay.avi (Motion JPEG) for an odd width or height, which MPEG-4 through
    FFmpeg cannot keep (OpenCV would drop the last column or row)."""
    return "overlay.avi" if size[0] % 2 or size[1] % 2 else "overlay.mp4"


def remove_stale_labels(labels_dir: Path, keep: int) -> int:
    """Delete label PNGs (NNNNNN.png) of an earlier run numbered `keep` or more; how many went."""
    removed = 0
    try:
        entries = list(labels_dir.iterdir())
    except OSError:
        return 0
    for path in entries:
        m = LABEL_NAME.fullmatch(path.name)
        if m and int(m.group(1)) >= keep and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    if keep == 0:
        with contextlib.suppress(OSError):
            labels_dir.rmdir()  # only if nothing else is in it
    return removed


def stream_folders(sources: list[str]) -> list[str]:
    """One sub-folder name per source, as given on the command line: its file or folder name
    without the extension ('camera0' for camera 0), characters other than letters, digits, '.',
    '_' and '-' as '_'; sources whose names clash (ignoring case) get '-' and their 1-based
    position: a/clip.mp4 b/clip.mp4 c.mp4 -> clip-1, clip-2, c."""
    stems = []
    for source in sources:
        text = str(source)
        stem = f"camera{text}" if text.isdigit() else Path(text.rstrip("/\\")).stem
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip(".") or "stream"
        stems.append(stem)
    lowered = [s.lower() for s in stems]
    return [f"{s}-{i + 1}" if lowered.count(s.lower()) > 1 else s for i, s in enumerate(stems)]


def write_summary(path: Path, make, stop: StopSignals, signum: int | None) -> tuple[dict, OutputError | None]:
    """Write make(signal received or None) to path as JSON; again if a signal came while it was
    written (twice at most), so the summary says the run was interrupted. (summary, the error
    that kept it from being written, or None)."""
    while True:
        received = stop.received if signum is None else signum
        summary = make(received)
        try:
            write_text_atomic(path, json.dumps(summary, indent=2) + "\n")
        except OutputError as e:
            return summary, e
        if (stop.received if signum is None else signum) == received:
            return summary, None


def interruption(received: int | None) -> dict:
    return {"interrupted": received is not None, "signal": None if received is None else signal.Signals(received).name}


class StreamOutput:
    """One stream's outputs in its folder, as a single `run` writes them.

    open() (once the first frame is segmented: a frame the bundle cannot take leaves nothing)
    creates and locks the folder, removes killed runs' temporary files and starts the video;
    write(frame, result) writes one frame's outputs, its label PNG and video frame, both or
    neither; finish(...) verifies the video (or, after an output error, leaves the previous one),
    removes what an earlier run left, writes summary.json and releases the folder. `failure`: the
    error to report after finish, its message saying what was kept; None if the stream ended well.
    """

    def __init__(self, out: Path, source, pipe, save_labels: bool):
        self.out, self.source, self.pipe, self.save_labels = Path(out), source, pipe, save_labels
        self.labels_dir = self.out / "labels"
        self.video = self.out / video_name(source.size)
        self.palette = pipe.palette
        self.stats = RunStats(pipe.manifest)
        self.committed = 0
        self.writer: AtomicVideoWriter | None = None
        self.removed = 0
        self.failure: VssEdgeError | None = None
        self._folder = contextlib.ExitStack()

    @property
    def opened(self) -> bool:
        return self.writer is not None

    def open(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.save_labels:
                self.labels_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create output folder '{self.out}': {e.strerror or e}") from None
        try:
            self._folder.enter_context(locked_folder(self.out))
            self.removed = remove_stale_temporaries(self.out) + remove_stale_temporaries(self.labels_dir)
            self.writer = AtomicVideoWriter(self.video, self.source.fps, self.source.size).__enter__()
        except BaseException:
            self._folder.close()
            raise

    def write(self, frame, result) -> None:
        drawn = overlay(frame, result.labels, self.palette)
        png = self.labels_dir / f"{result.index:06d}.png"
        if self.save_labels:
            write_image_atomic(png, result.labels)
        try:
            self.writer.write(drawn)
        except BaseException:
            if self.save_labels:
                png.unlink(missing_ok=True)
            raise
        self.stats.add(result)
        self.committed += 1

    def finish(self, stop: StopSignals, signum: int | None, error: VssEdgeError | None, stopped_early: bool,
               extra: dict) -> dict:
        """The summary written (or what it would have said); sets `failure`. stopped_early: the
        run stopped this stream before its end on purpose (--max-frames). extra: more figures
        for the summary (live counts)."""
        output_error = error if isinstance(error, OutputError) else None
        error = None if output_error is not None else error
        try:
            if output_error is None:
                try:
                    self.writer.finish()
                except OutputError as e:
                    output_error = e
            else:
                self.writer.discard()
            warnings = []
            if self.source.ended_early and signum is None and error is None and output_error is None \
                    and not stopped_early:
                warnings.append(self.source.ended_early)
            for warning in warnings:
                print(f"vss-edge run: warning: {warning}", file=sys.stderr)
            stale = remove_stale_labels(self.labels_dir, self.committed if self.save_labels else 0)
            if output_error is None:
                other = self.out / ("overlay.avi" if self.video.suffix == ".mp4" else "overlay.mp4")
                if other.is_file():  # an earlier run's overlay in the other format
                    stale += 1
                    with contextlib.suppress(OSError):
                        other.unlink()

            def make(received):
                summary = self.stats.summary()
                verified = self.writer.verified
                summary.update(
                    source=self.source.name, frames_read=self.committed,
                    frames_written=self.writer.frames_written if verified else 0,
                    labels_written=self.committed if self.save_labels else 0, **interruption(received),
                    device=self.pipe.device, backends=self.pipe.backends(), scheduler=repr(self.pipe.scheduler),
                    compute_budget=self.pipe.program.budget_report(),
                    outputs={"video": str(self.video) if verified else None},
                    warnings=warnings, stale_files_removed=stale + self.removed,
                    error=None if error is None and output_error is None else str(output_error or error), **extra)
                if self.save_labels:
                    summary["outputs"]["labels"] = str(self.labels_dir)
                return summary

            summary, summary_error = write_summary(self.out / "summary.json", make, stop, signum)
        finally:
            self._folder.close()
        video, done = self.video, self.committed
        if output_error is not None:  # the first cause first; then what is left in the folder
            said = f"; and {summary_error}" if summary_error else f"; see {self.out / 'summary.json'}"
            self.failure = OutputError(f"{output_error}; {video.name} was left as it was ({done} frames were done)"
                                       f"{said}")
        elif error is not None:
            self.failure = type(error)(f"{error} (the {done} frames before it are in {video})")
        elif summary_error is not None:
            self.failure = OutputError(f"{summary_error} (the {done} frames are in {video})")
        return summary

    def abandon(self) -> None:
        """After a bug: the previous video stays as it was; the folder is released."""
        if self.writer is not None:
            self.writer.discard()
        self._folder.close()


class StreamStats:
    """What `profile` keeps of a stream: statistics only (StreamOutput's contract, nothing written)."""

    opened = True

    def __init__(self, source, pipe, warmup: int):
        self.source, self.pipe = source, pipe
        self.stats = RunStats(pipe.manifest, warmup=warmup)
        self.committed = 0
        self.failure: VssEdgeError | None = None

    def open(self) -> None:
        pass

    def write(self, frame, result) -> None:
        self.stats.add(result)
        self.committed += 1

    def finish(self, stop, signum, error, stopped_early, extra) -> dict:
        self.failure = error
        summary = self.stats.summary()
        summary.update(source=self.source.name, frames_read=self.committed, device=self.pipe.device,
                       backends=self.pipe.backends(), scheduler=repr(self.pipe.scheduler), compute_budget=self.pipe.program.budget_report(),
                       error=None if error is None else str(error), **extra)
        return summary

    def abandon(self) -> None:
        pass


class Stream:
    """One source's place in the loop: where its frames come from (the source, or its live
    reader), where they go (`sink`: StreamOutput or StreamStats), and how it ended."""

    def __init__(self, source, sink, live: bool):
        self.source, self.sink = source, sink
        self.live = LiveFrames(source) if live else None
        self.frames = None if live else iter(source)
        self.frame = self.result = None  # read and not written yet; its FrameResult once segmented
        self.captured_at: float | None = None
        self.done = False
        self.error: VssEdgeError | None = None
        self.reached_max = False
        self.latency = LatencyStats()  # live: capture to labels, ms

    def read(self, stop: StopSignals) -> None:
        """The next frame into `frame`; at the end (or a stop while waiting for a live frame) done."""
        try:
            frame = next(self.frames, None) if self.live is None else self._newest(stop)
        except VssEdgeError as e:
            self.fail(e)
            return
        self.frame = frame
        self.done = frame is None

    def _newest(self, stop: StopSignals):
        while True:
            got = self.live.take(timeout=0.1)
            if got is not None:
                self.captured_at = got.captured_at
                return got.frame
            if self.live.ended or stop.received is not None:
                return None

    def segmented(self, outcome, labels_at: float) -> None:
        """Take this tick's step outcome: a FrameResult, or the VssEdgeError that ends the stream
        (a FrameError on the first frame: the source's). Any other exception is a bug: raised."""
        if not isinstance(outcome, BaseException):
            self.result = outcome
            if self.captured_at is not None:
                self.latency.add((labels_at - self.captured_at) * 1000.0)
            return
        if not isinstance(outcome, VssEdgeError):
            raise outcome
        if isinstance(outcome, FrameError) and not self.sink.committed:
            outcome = SourceError(f"source '{self.source.name}': {outcome}")
        self.fail(outcome)

    def write(self) -> None:
        try:
            if not self.sink.opened:
                self.sink.open()
            self.sink.write(self.frame, self.result)
        except VssEdgeError as e:
            self.fail(e)
        self.frame = self.result = None

    def fail(self, error: VssEdgeError) -> None:
        self.error, self.done, self.frame, self.result = error, True, None, None

    def stop_reading(self) -> None:
        if self.live is not None:
            self.live.close()

    def figures(self) -> dict:
        """Live counts and latency (captured = processed + dropped); nothing for a file read in full."""
        if self.live is None:
            return {}
        dropped = self.live.frames_dropped + (self.live.frames_taken - self.sink.committed)
        return {"live": True, "frames_captured": self.live.frames_captured, "frames_processed": self.sink.committed,
                "frames_dropped": dropped, "capture_to_labels": self.latency.to_dict()}

    def finish(self, stop: StopSignals, signum: int | None) -> dict | None:
        """The stream's summary, or None if it never got as far as its outputs (`failure` says why)."""
        if not self.sink.opened:
            return None
        return self.sink.finish(stop, signum, self.error, self.reached_max, self.figures())

    @property
    def failure(self) -> VssEdgeError | None:
        return self.sink.failure if self.sink.opened else self.error


def drive(streams: list[Stream], step_all, stop: StopSignals, max_frames: int | None, ticks: TickStats,
          progress: Progress | None) -> int | None:
    """Run every stream to its end, `max_frames` or its failure; returns the signal that stopped
    the run (recorded, or raised as a KeyboardInterrupt), else None. step_all(frames) -> one
    outcome per stream (a FrameResult, an exception, or None where its frame was None)."""
    try:
        for stream in streams:
            stream.read(stop)
        while any(stream.frame is not None for stream in streams):
            start = time.perf_counter()
            outcomes = step_all([stream.frame for stream in streams])
            labels_at = time.perf_counter()
            for stream, outcome in zip(streams, outcomes):
                if stream.frame is not None:
                    stream.segmented(outcome, labels_at)
            ticks.add([o if not isinstance(o, BaseException) else None for o in outcomes],
                      (labels_at - start) * 1000.0)
            for stream in streams:
                if stream.result is not None:
                    stream.write()
            if progress is not None:
                progress.update(streams[0].sink.committed if len(streams) == 1 else ticks.seen)
            if stop.received is not None:
                return stop.received
            for stream in streams:
                if stream.done:
                    continue
                if max_frames and stream.sink.committed >= max_frames:
                    stream.done = stream.reached_max = True
                else:
                    stream.read(stop)
    except KeyboardInterrupt as e:  # raised by code (run's handlers only record)
        return signal_number(e)
    return stop.received  # one that came while the last frames were read (a live wait ends on it)


def step_one(pipe):
    """step_all over a single Pipeline: [FrameResult or the Exception its step raised]."""
    def step_all(frames):
        try:
            return [pipe.step(frames[0])]
        except Exception as e:  # noqa: BLE001  sorted out by Stream.segmented
            return [e]
    return step_all


def step_many(multi):
    def step_all(frames):
        return multi.step_all(frames, return_exceptions=True)
    return step_all


def finish_streams(streams: list[Stream], stop: StopSignals, signum: int | None) -> list[dict | None]:
    for stream in streams:
        stream.stop_reading()
    return [stream.finish(stop, signum) for stream in streams]


def run_source(pipe, source, out: Path, save_labels: bool, max_frames: int | None, quiet: bool,
               live: bool = False, progress=None) -> dict:
    """Segment every frame of source into out/overlay.mp4 (+ labels/); returns the summary.

    The first frame is segmented before anything is written, so a frame the bundle cannot take
    (1x1...) is a one-line error with no output. Ctrl-C and SIGTERM are only recorded while it
    runs and looked at between frames, so one frame's outputs (its label PNG, its video frame,
    its count) are a unit no signal cuts in two: the run stops after the frames done, which are
    kept (summary 'interrupted': true), and the video and summary are finished whatever other
    signals arrive. The video is verified before it takes its name. The folder is made
    consistent with this run: label PNGs of an earlier, longer run (or of one with
    --save-labels, when this one has none) are removed, and so are the temporary files of
    killed runs; two runs cannot share one --out.

    A user error part-way (an unreadable frame...) finishes the video of the frames before it,
    then is raised with that said. An output that cannot be written (disk full, read-only)
    stops the run: no video replaces the previous one, the summary says what happened (when it
    can be written), and OutputError is raised with the first cause. Any other exception (a
    bug) leaves a previous video as it was. live: the newest frame each time (runtime.live),
    drops counted in the summary. progress: an object with update(frames_done), called after
    each frame written, and close() (default: a Progress line on stderr unless quiet).
    """
    with StopSignals(record_only=True) as stop:
        stream = Stream(source, StreamOutput(out, source, pipe, save_labels), live)
        total = None if live else min(filter(None, (source.frame_count, max_frames)), default=None)
        progress = progress or Progress(total, not quiet)
        try:
            signum = drive([stream], step_one(pipe), stop, max_frames, TickStats(), progress)
        except BaseException:
            stream.stop_reading()
            stream.sink.abandon()  # a bug: the previous video stays as it was
            raise
        finally:
            progress.close()
        if signum is not None and not stream.sink.opened:
            stream.stop_reading()
            raise Interrupted(signum)  # stopped before anything was written: as a stop while loading
        [summary] = finish_streams([stream], stop, signum)
    if stream.failure is not None:
        raise stream.failure
    return summary


def run_sources(multi, sources: list, folders: list[str], out: Path, save_labels: bool, max_frames: int | None,
                quiet: bool, live: bool = False, unopened: dict | None = None) -> dict:
    """Segment several sources at once on a MultiStream (one stream per source) into
    out/<folder>/ each (run_source's outputs and guarantees, per stream) and write
    out/summary.json: the run's per-stream and per-tick figures. Returns that summary; a stream
    that failed has its message in summary['per_stream'][i]['error']. unopened: position on the
    command line -> (name, error) of the sources that could not be opened, reported in their place."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder '{out}': {e.strerror or e}") from None
    with StopSignals(record_only=True) as stop, locked_folder(out):
        remove_stale_temporaries(out)
        streams = [Stream(source, StreamOutput(out / folder, source, pipe, save_labels), live)
                   for source, folder, pipe in zip(sources, folders, multi.pipelines)]
        ticks = TickStats()
        progress = Progress(None, not quiet, unit="tick")
        start = time.perf_counter()
        try:
            signum = drive(streams, step_many(multi), stop, max_frames, ticks, progress)
        except BaseException:
            for stream in streams:
                stream.stop_reading()
                stream.sink.abandon()
            raise
        finally:
            progress.close()
        wall = time.perf_counter() - start
        summaries = finish_streams(streams, stop, signum)

        def make(received):
            return streams_summary(multi, streams, summaries, folders, ticks, wall, live, unopened or {},
                                   **interruption(received))

        summary, error = write_summary(out / "summary.json", make, stop, signum)
    if error is not None:
        raise error
    return summary


def profile_sources(multi, sources: list, warmup: int, max_frames: int | None, live: bool = False,
                    unopened: dict | None = None) -> dict:
    """run_sources' figures without writing anything: per stream the first `warmup` frames, and
    the first max(1, warmup) ticks, are left out. Ctrl-C and SIGTERM stop it (raised)."""
    with StopSignals() as stop:
        streams = [Stream(source, StreamStats(source, pipe, warmup), live)
                   for source, pipe in zip(sources, multi.pipelines)]
        ticks = TickStats(skip=max(1, warmup))
        start = time.perf_counter()
        try:
            signum = drive(streams, step_many(multi), stop, max_frames, ticks, None)
        finally:
            for stream in streams:
                stream.stop_reading()
        if signum is not None:
            raise Interrupted(signum)
        wall = time.perf_counter() - start
        summaries = finish_streams(streams, stop, None)
        folders = [None] * len(streams)
        return streams_summary(multi, streams, summaries, folders, ticks, wall, live, unopened or {},
                               interrupted=False, signal=None)


def streams_summary(multi, streams: list[Stream], summaries: list, folders: list, ticks: TickStats, wall_s: float,
                    live: bool, unopened: dict, **interrupted) -> dict:
    """The whole run's summary: what was run, per stream in command-line order (its summary's
    figures, or its error), per tick, and in all (frames over the summed tick time: the pipeline's
    FPS over every stream; frames over the wall time: end to end)."""
    manifest = multi.manifest
    opened = iter(zip(streams, summaries, folders))
    per_stream = []
    for position in range(len(streams) + len(unopened)):
        if position in unopened:
            name, error = unopened[position]
            per_stream.append({"source": name, "folder": None, "error": str(error), "frames_read": 0})
            continue
        stream, summary, folder = next(opened)
        failure = stream.failure
        entry = {"source": stream.source.name, "folder": folder if summary is not None else None,
                 "error": None if failure is None else str(failure), "frames_read": stream.sink.committed}
        if summary is not None:
            entry.update({k: summary[k] for k in ("frames_read", "key_frames", "fps", "frame", "warnings")
                          if k in summary})
            entry.update(stream.figures())
        per_stream.append(entry)
    frames = sum(s.sink.committed for s in streams)
    tick = ticks.summary()
    return {
        "method": manifest.method, "resolution": [manifest.height, manifest.width], "device": multi.device,
        "backends": describe_backends(multi.pipelines[0].sessions) if multi.pipelines else None,
        "streams": len(per_stream), "policy": multi.policy.name, "workers": multi.workers, "live": live,
        "scheduler": repr(multi.pipelines[0].scheduler) if multi.pipelines else None,
        "frames": frames, "key_frames": sum(s.sink.stats.key_frames for s in streams),
        "ticks": ticks.seen,
        "fps": frames / (ticks.all_ms / 1000.0) if ticks.all_ms else 0.0,
        "throughput_fps": frames / wall_s if wall_s > 0 else None,
        "tick": tick, "failed": sum(e["error"] is not None for e in per_stream),
        **interrupted, "per_stream": per_stream,
    }
