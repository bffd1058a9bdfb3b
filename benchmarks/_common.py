"""Helpers shared by the benchmark scripts: machine and code description, bundle reuse,
the sample clip, and the CpuMonitor that says how much other processes disturbed a block."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_model() -> str:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    if fields.get("cpu family"):
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return f"{name}; INT8-relevant: {cpu_int8_flags()}; bf16: {cpu_bf16_flags()}"


def cpu_bf16_flags() -> str:
    """The CPU's bf16 arithmetic, e.g. 'AVX-512 BF16 yes, AMX-BF16 no' (OpenVINO's bf16 is fast only with one)."""
    from vss_edge.runtime.cpu import cpu_bf16_support

    info = cpu_bf16_support()
    if not info["known"]:
        return "unknown (no /proc/cpuinfo flags)"
    return (f"AVX-512 BF16 {'yes' if info['avx512_bf16'] else 'no'}, "
            f"AMX-BF16 {'yes' if info['amx_bf16'] else 'no'}")


def cpu_int8_flags() -> str:
    """The CPU's INT8-relevant instruction sets, e.g. 'AVX2 yes, AVX-512F yes, VNNI no' (goals are per CPU kind)."""
    from vss_edge.runtime.cpu import cpu_int8_support

    info = cpu_int8_support()
    if not info["known"]:
        return "unknown (no /proc/cpuinfo flags)"
    vnni = [n for n, k in (("AVX-512 VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"), ("AMX-INT8", "amx_int8"),
                           ("Arm dot product", "arm_dotprod")) if info[k]]
    return (f"AVX2 {'yes' if info['avx2'] else 'no'}, AVX-512F {'yes' if info['avx512f'] else 'no'}, "
            f"VNNI {'yes (' + ', '.join(vnni) + ')' if vnni else 'no'}")


CODE_ENV = "VSS_EDGE_CODE"  # the commit, as the caller knows it (a lent GPU machine's copy of .git can be stale)


def code_version() -> str:
    """Git commit of the checkout, and which measured code (not benchmarks/) differs from it; or
    $VSS_EDGE_CODE where the caller sets it (benchmarks/gpu_run.sh: the device's .git read an old commit)."""
    import subprocess

    if os.environ.get(CODE_ENV):
        return f"{os.environ[CODE_ENV]} (as given in ${CODE_ENV})"

    def git(*cmd):
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
        changed = [line[3:] for line in git("status", "--porcelain", "--", "runtime", "exporters",
                                            "vss_edge").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{commit}" + (f", with uncommitted changes in {', '.join(changed)}" if changed else ", clean")


def bundle_problem(path: Path, cfg, method: str, seed: int) -> str | None:
    """None if path holds a valid `method` bundle exported from cfg with weights seeded by `seed`,
    else why not."""
    from vss_edge.runtime.errors import BundleError
    from vss_edge.runtime.manifest import load_manifest

    try:
        manifest = load_manifest(path)
    except BundleError as e:
        return str(e)
    expected = cfg.to_dict()
    expected.pop("class_names")
    expected.pop("palette")
    if manifest.method != method or manifest.config != expected:
        return f"its config {manifest.config} is not {expected}"
    checkpoints = manifest.provenance.get("checkpoints", {})
    if not checkpoints or any(v != {"random_init_seed": seed} for v in checkpoints.values()):
        return f"its weights are {checkpoints}, not random with seed {seed}"
    return stale_graphs(manifest)


def stale_graphs(manifest) -> str | None:
    """Why a bundle's graphs are not what this checkout's exporters make (other model or exporter
    code: exporters.bundle.exporter_source_digest), or None."""
    from vss_edge.exporters.bundle import exporter_source_digest

    if manifest.provenance.get("exporter_source") != exporter_source_digest():
        return "exported by other model / exporter code than this checkout's"
    return None


def clip_frames(count: int) -> list[np.ndarray]:
    """`count` frames of the sample clip, decoded once (cycled if the clip is shorter)."""
    from vss_edge.runtime.sources import open_source, sample_clip_path

    with open_source(sample_clip_path()) as source:
        clip = list(source)
    return [clip[i % len(clip)] for i in range(count)]


def tree_cpu_seconds() -> float:
    """CPU seconds used by this process and every process below it (live ones from /proc; ones
    that ended through their parents' children times): a benchmark's own work where it runs in
    other processes (Ray's workers are the raylet's children, the raylet this process's)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: ppid
        times[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo += children.get(pid, [])
    return total / tick


class CpuMonitor:
    """CPU time used by OTHER processes (and stolen by the hypervisor) while a block runs.

    On a shared machine this says how much a measurement was disturbed: the share of all
    cores' time that went to other processes / to steal during the block. tree: count this
    process's descendants as its own (the block runs work in child processes).
    """

    def __init__(self, tree: bool = False):
        self.other, self.steal, self.wall = 0.0, 0.0, 0.0
        self.tree = tree

    def _sample(self):
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        t = os.times()
        own = tree_cpu_seconds() if self.tree else t.user + t.system
        # user nice system idle iowait irq softirq steal
        return time.perf_counter(), (v[0] + v[1] + v[2] + v[5] + v[6]), v[7], own

    def __enter__(self):
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self._start is None or end is None:
            return
        tick = os.sysconf("SC_CLK_TCK")
        self.wall += end[0] - self._start[0]
        self.other += max((end[1] - self._start[1]) / tick - (end[3] - self._start[3]), 0.0)
        self.steal += (end[2] - self._start[2]) / tick

    def add(self, other: "CpuMonitor") -> None:
        self.wall += other.wall
        self.other += other.other
        self.steal += other.steal

    def share(self, what: str) -> float:
        return getattr(self, what) / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0


BUSY = 0.10  # other processes' share of the CPU above which a block counts as disturbed


def wait_for_quiet(max_wait: float, threshold: float = BUSY) -> None:
    """Wait (up to max_wait s) until other processes use < threshold of the CPU over 1 s."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        with CpuMonitor() as probe:
            time.sleep(1.0)
        if probe.share("other") < threshold:
            return
    if max_wait > 0:
        log(f"  machine still busy after {max_wait:.0f} s; measuring anyway")


def measure(fn, quiet_wait: float, into: CpuMonitor, what: str):
    """fn() under a CpuMonitor (counting child processes as ours if `into` does), added to `into`.
    With quiet_wait > 0: first wait for a quiet machine, and measure again (at most twice) when
    other processes disturbed the block, keeping the least disturbed attempt."""
    best = None
    for attempt in range(3 if quiet_wait > 0 else 1):
        wait_for_quiet(quiet_wait)
        with CpuMonitor(tree=into.tree) as monitor:
            result = fn()
        if best is None or monitor.share("other") < best[1].share("other"):
            best = (result, monitor)
        if monitor.share("other") < BUSY:
            break
        if quiet_wait > 0 and attempt < 2:
            log(f"  {what}: other processes took {100 * monitor.share('other'):.0f}% of the CPU; measuring again")
    into.add(best[1])
    return best[0]


def fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def cpu_load(monitor: CpuMonitor) -> str:
    steal = monitor.share("steal")
    return f"{100 * monitor.share('other'):.0f}%" + (f" (+{100 * steal:.0f}% steal)" if steal >= 0.005 else "")



def disturbance(monitor: CpuMonitor) -> str:
    """The header line saying how much other processes used the CPU while measuring."""
    return (f"- other processes used {cpu_load(monitor)} of the CPU during the measurements"
            + (" -- the machine was shared: absolute numbers are pessimistic, ratios less reliable"
               if monitor.share("other") + monitor.share("steal") > 0.05 else ""))


def report_header(title: str, threads: int, details: list[str], monitor: "CpuMonitor") -> list[str]:
    """The report's first lines: title, date and code, machine and threads, `details` (one
    "- " line each: weights, frames...), and how much other processes disturbed the run."""
    import datetime

    return [f"# {title}", "", f"- {datetime.date.today().isoformat()}, code {code_version()}",
            f"- {cpu_model()}, {os.cpu_count()} cores, ONNX Runtime CPU EP, {threads} threads, "
            f"Python {platform.python_version()}",
            *[f"- {d}" for d in details], disturbance(monitor), ""]


def report_path(out, quick: bool, name: str) -> Path:
    """Where a script writes its report: --out if given, else a temporary file for --quick, else
    benchmarks/results/NAME_cpu.md."""
    import tempfile

    if out:
        return Path(out)
    if quick:
        return Path(tempfile.gettempdir()) / f"{name}_quick.md"
    return ROOT / "benchmarks" / "results" / f"{name}_cpu.md"


def publish(header: list[str], text: str, out, total_s: float) -> int:
    """Print header + text and write them atomically to `out`; returns 0 (the script's exit code)."""
    from vss_edge.runtime.outputs import write_text_atomic

    report = "\n".join(header) + "\n" + text
    print(report, end="")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, report)
    log(f"wrote {out} ({total_s / 60:.1f} min)")
    return 0


def ensure_bundle(path: Path, cfg, method: str, export, seed: int) -> Path:
    """Reuse the bundle at `path` if it is `method` exported from cfg with `seed`, else export(path, cfg, seed=seed)."""
    problem = bundle_problem(path, cfg, method, seed) if path.exists() else "absent"
    if problem is None:
        log(f"reusing bundle {path}")
        return path
    log(f"exporting bundle {path} ({problem})")
    t0 = time.perf_counter()
    export(path, cfg, seed=seed)
    log(f"  exported in {time.perf_counter() - t0:.0f} s")
    return path


def ensure_trained_bundle(path: Path, cfg, method: str, export, weights) -> Path:
    """Reuse the bundle at `path` if it is `method` exported from cfg with exactly the weight files
    `weights` (every checkpoint entry of its provenance one of them, by sha256), else export(path, cfg)."""
    from vss_edge.runtime.errors import BundleError
    from vss_edge.runtime.manifest import load_manifest, sha256_file

    problem = "absent"
    if path.exists():
        try:
            manifest = load_manifest(path)
            expected = cfg.to_dict()
            expected.pop("class_names")
            expected.pop("palette")
            shas = {v.get("sha256") for v in manifest.provenance.get("checkpoints", {}).values()}
            problem = (f"its config {manifest.config} is not {expected}"
                       if manifest.method != method or manifest.config != expected else
                       stale_graphs(manifest) if shas == {sha256_file(Path(w)) for w in weights} else "other weights")
        except BundleError as e:
            problem = str(e)
    if problem is None:
        log(f"reusing bundle {path}")
        return path
    log(f"exporting bundle {path} ({problem})")
    t0 = time.perf_counter()
    export(path, cfg)
    log(f"  exported in {time.perf_counter() - t0:.0f} s")
    return path
