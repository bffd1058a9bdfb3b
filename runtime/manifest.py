"""The bundle contract: manifest.json plus one .onnx file per graph (torch-free).

A bundle is a directory. manifest.json (format_version 1) holds:
- method, config (resolution, classes, keyframe net, ...), input (dtype, layout,
  channel order, resize rule, normalisation applied in-graph), classes (names, palette);
- graphs: name -> role, file, sha256, precision, calibration, inputs/outputs
  ([{name, shape, dtype}]), gflops, optimization (optional: "all" or "extended", the ONNX
  Runtime optimisation level to open it at);
- state: the tensors carried from frame to frame [{name, shape, dtype}], each an output
  of the graphs with that name, shape and dtype;
- scheduler: {name, params}; provenance: package versions, opset, IR, checkpoints;
- labels (optional): where the labels are computed: {"computed": "graph"} (the default) or
  on the host from named score outputs (runtime.labels.label_tail).

`load_manifest` validates all of it and every file hash before anything runs, and
raises BundleError naming the file and the mismatch. Graph inputs of dtype uint8 take
the frame: they must be [1, height, width, 3]. config.num_classes (when given) is the class
count: classes.names and classes.palette have one entry per class, and graph outputs named
'logits' ([1, C, h, w]) and 'class_logits' ([1, N, C + 1], MPVSS) agree with it.

`check_program_fit` checks the graphs against what a method's program does with them (its
`uses`: each graph's role, the inputs it feeds, the outputs it reads), so a bundle whose
entries were swapped or edited is refused at load, not on the first frame.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vss_edge.runtime.errors import BundleError

FORMAT = "vss-edge-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ROLES = ("keyframe_net", "flow_net", "propagation_head", "mask_generator", "path_net", "partial_net")
PRECISIONS = ("fp32", "fp16", "int8")
# ONNX Runtime graph optimisation levels a graph entry may ask for ("optimization"; calibration
# measures the faster for an INT8 graph); without one: "all", except INT8 graphs calibrated before
# calibration chose (their in-graph normalisation slowed down under the NHWC layout pass): "extended".
OPTIMIZATIONS = ("all", "extended")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    role: str
    file: str
    sha256: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    gflops: float | None = None
    calibration: dict | None = None
    optimization: str | None = None  # ONNX Runtime graph optimisation level (OPTIMIZATIONS); None: by precision


@dataclass(frozen=True)
class GraphUse:
    """What a program does with one graph: the role it runs it as, every input it feeds
    (the frame is always fed as 'image'), and the outputs it reads."""

    role: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    root: Path
    method: str
    config: dict
    input: dict
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    graphs: dict[str, GraphSpec]
    state: tuple[TensorSpec, ...]
    scheduler: dict
    provenance: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)
    labels: dict = field(default_factory=lambda: {"computed": "graph"})

    @property
    def labels_on_host(self) -> bool:
        """Whether the runtime computes the labels from score outputs (the graphs output none)."""
        return self.labels.get("computed") == "host"

    @property
    def height(self) -> int:
        return int(self.input["height"])

    @property
    def width(self) -> int:
        return int(self.input["width"])

    def graph_path(self, name: str) -> Path:
        return self.root / self.graphs[name].file


def package_versions(optional: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of vss_edge, onnxruntime and numpy, and of each `optional` package that imports
    (e.g. ("torch", "onnx", "onnxsim")): a manifest's provenance record."""
    import importlib

    versions = {}
    for name in ("vss_edge", "onnxruntime", "numpy", *optional):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return versions


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require(obj: dict, key: str, kind: type, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise BundleError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: field '{key}' should be {kind.__name__}, got {type(value).__name__}")
    return value


def _tensor_specs(items, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list):
        raise BundleError(f"{where}: expected a list of tensors")
    specs = []
    for i, t in enumerate(items):
        name = _require(t, "name", str, f"{where}[{i}]")
        shape = _require(t, "shape", list, f"{where}[{i}]")
        dtype = _require(t, "dtype", str, f"{where}[{i}]")
        if not all(type(d) is int and d > 0 for d in shape):  # bool is an int subclass
            raise BundleError(f"{where}[{i}] '{name}': shape must be static positive ints, got {shape}")
        specs.append(TensorSpec(name, tuple(shape), dtype))
    return tuple(specs)


def _check_state(state: tuple[TensorSpec, ...], graphs: dict[str, GraphSpec], where: str) -> None:
    """Each state tensor must be produced, with its shape and dtype, by every graph output of its name."""
    for t in state:
        produced = {(g.name, o.shape, o.dtype) for g in graphs.values() for o in g.outputs if o.name == t.name}
        if not produced:
            raise BundleError(f"{where}: state '{t.name}' is not an output of any graph")
        for graph, shape, dtype in sorted(produced):
            if (shape, dtype) != (t.shape, t.dtype):
                raise BundleError(f"{where}: state '{t.name}' is {list(t.shape)} {t.dtype}, but graph '{graph}' "
                                  f"outputs it as {list(shape)} {dtype}")


def _check_class_axes(graphs: dict[str, GraphSpec], num_classes: int, where: str) -> None:
    """Graph outputs that carry the classes must have num_classes of them (MPVSS: + 1, 'no object')."""
    for g in graphs.values():
        for t in g.outputs:
            if t.name == "logits" and len(t.shape) == 4:
                axis, expected = 1, num_classes
            elif t.name == "class_logits" and len(t.shape) == 3:
                axis, expected = 2, num_classes + 1
            else:
                continue
            if t.shape[axis] != expected:
                raise BundleError(f"{where}: graph '{g.name}' output '{t.name}' {list(t.shape)} has {t.shape[axis]} "
                                  f"on axis {axis}, but config.num_classes {num_classes} means {expected}")


def check_program_fit(manifest: Manifest, program) -> None:
    """BundleError unless every graph the program uses has the role, inputs and outputs it expects.

    program.uses: graph name -> GraphUse. The inputs must be exactly the ones it feeds (ONNX
    Runtime refuses a feed a graph lacks, and an input left unfed); the outputs must include
    the ones it reads; the 'image' input must take the frame (uint8 [1, height, width, 3]).
    """
    where = f"bundle '{manifest.root}'"
    for name, use in getattr(program, "uses", {}).items():
        spec = manifest.graphs.get(name)
        if spec is None:
            continue  # a missing graph is reported by the pipeline, with the method's full list
        what = f"{where}: graph '{name}' ({spec.file})"
        if spec.role != use.role:
            raise BundleError(f"{what} has role '{spec.role}', but method '{manifest.method}' runs '{name}' as "
                              f"its {use.role} (manifest entries swapped or edited?)")
        inputs = {t.name: t for t in spec.inputs}
        if set(inputs) != set(use.inputs):
            raise BundleError(f"{what} takes inputs {sorted(inputs)}, but method '{manifest.method}' feeds it "
                              f"{sorted(use.inputs)} (manifest entries swapped or edited?)")
        reads = use.outputs
        if manifest.labels_on_host and "labels" in reads:  # the program reads the scores instead
            reads = tuple(o for o in reads if o != "labels") + tuple(
                s for s in program.label_scores if s not in reads)
        lacking = [o for o in reads if o not in {t.name for t in spec.outputs}]
        if lacking:
            raise BundleError(f"{what} has outputs {[t.name for t in spec.outputs]}, but method "
                              f"'{manifest.method}' reads {list(reads)} from it: {lacking} missing")
        frame = inputs.get("image")
        expected = (1, manifest.height, manifest.width, 3)
        if frame is not None and (frame.dtype, frame.shape) != ("uint8", expected):
            raise BundleError(f"{what}: input 'image' is {list(frame.shape)} {frame.dtype}, but the frame is "
                              f"fed as uint8 {list(expected)}")


def load_manifest(bundle_dir: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read and validate BUNDLE/manifest.json; check every graph file and its sha256."""
    root = Path(bundle_dir)
    if not root.exists():
        raise BundleError(f"bundle '{root}' does not exist")
    if not root.is_dir():
        raise BundleError(f"bundle '{root}' is not a directory (a bundle is a folder with manifest.json)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"bundle '{root}' has no {MANIFEST_NAME}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror or e}") from None
    where = str(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{where}: not a vss-edge bundle manifest (format != '{FORMAT}')")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{where}: unsupported format_version {version!r}; this vss-edge reads version {FORMAT_VERSION}"
        )
    method = _require(raw, "method", str, where)
    config = _require(raw, "config", dict, where)
    inp = _require(raw, "input", dict, where)
    for key in ("height", "width"):
        if _require(inp, key, int, f"{where}: input") < 1:
            raise BundleError(f"{where}: input.{key} must be positive, got {inp[key]}")
    classes = _require(raw, "classes", dict, where)
    names = _require(classes, "names", list, f"{where}: classes")
    palette = _require(classes, "palette", list, f"{where}: classes")
    if len(names) != len(palette) or not names:
        raise BundleError(f"{where}: classes.names ({len(names)}) and classes.palette ({len(palette)}) differ")
    num_classes = config.get("num_classes")
    if num_classes is not None:
        if type(num_classes) is not int or not 1 <= num_classes <= 255:
            raise BundleError(f"{where}: config.num_classes must be an integer in 1..255 (labels are uint8), "
                              f"got {num_classes!r}")
        if len(names) != num_classes:
            raise BundleError(f"{where}: classes.names and classes.palette have {len(names)} entries, but the "
                              f"bundle has {num_classes} classes (config.num_classes); one entry per class expected")
    for i, colour in enumerate(palette):
        if not (isinstance(colour, list) and len(colour) == 3
                and all(type(c) is int and 0 <= c <= 255 for c in colour)):
            raise BundleError(f"{where}: classes.palette[{i}] must be [r, g, b] ints in 0..255, got {colour!r}")
    graphs_raw = _require(raw, "graphs", dict, where)
    if not graphs_raw:
        raise BundleError(f"{where}: no graphs")
    graphs = {}
    for name, g in graphs_raw.items():
        gw = f"{where}: graphs.{name}"
        if not isinstance(g, dict):
            raise BundleError(f"{gw}: expected an object, got {type(g).__name__}")
        role = _require(g, "role", str, gw)
        if role not in ROLES:
            raise BundleError(f"{gw}: unknown role '{role}' (known: {', '.join(ROLES)})")
        precision = _require(g, "precision", str, gw)
        if precision not in PRECISIONS:
            raise BundleError(f"{gw}: unknown precision '{precision}'")
        spec = GraphSpec(
            name=name,
            role=role,
            file=_require(g, "file", str, gw),
            sha256=_require(g, "sha256", str, gw),
            precision=precision,
            inputs=_tensor_specs(_require(g, "inputs", list, gw), f"{gw}.inputs"),
            outputs=_tensor_specs(_require(g, "outputs", list, gw), f"{gw}.outputs"),
            gflops=g.get("gflops"),
            calibration=g.get("calibration"),
            optimization=g.get("optimization"),
        )
        if spec.optimization is not None and spec.optimization not in OPTIMIZATIONS:
            raise BundleError(f"{gw}: optimization must be one of {', '.join(OPTIMIZATIONS)}, "
                              f"got {spec.optimization!r}")
        file = root / spec.file
        if Path(spec.file).is_absolute() or ".." in Path(spec.file).parts:
            raise BundleError(f"{gw}: graph file '{spec.file}' must be a plain name inside the bundle")
        if not file.is_file():
            what = "is not a file" if file.exists() else "is missing"
            raise BundleError(f"bundle '{root}': graph file '{spec.file}' (graph '{name}') {what}")
        if spec.gflops is not None and (isinstance(spec.gflops, bool) or not isinstance(spec.gflops, (int, float))):
            raise BundleError(f"{gw}: gflops should be a number or null, got {spec.gflops!r}")
        frame = (1, inp["height"], inp["width"], 3)
        for t in spec.inputs:
            if t.dtype == "uint8" and t.shape != frame:
                raise BundleError(f"{gw}: frame input '{t.name}' has shape {list(t.shape)}, but input "
                                  f"height x width is {inp['height']}x{inp['width']} (expected {list(frame)})")
        if verify_hashes:
            actual = sha256_file(file)
            if actual != spec.sha256:
                raise BundleError(
                    f"bundle '{root}': '{spec.file}' does not match its manifest sha256 "
                    f"(expected {spec.sha256[:12]}…, got {actual[:12]}…); the file was changed or corrupted"
                )
        graphs[name] = spec
    if num_classes is not None:
        _check_class_axes(graphs, num_classes, where)
    state = _tensor_specs(raw.get("state", []), f"{where}: state")
    _check_state(state, graphs, where)
    scheduler = _require(raw, "scheduler", dict, where)
    _require(scheduler, "name", str, f"{where}: scheduler")
    if not isinstance(scheduler.get("params", {}), dict):
        raise BundleError(f"{where}: scheduler.params should be an object, got {type(scheduler['params']).__name__}")
    labels = raw.get("labels", {"computed": "graph"})
    from vss_edge.runtime.labels import label_tail

    try:
        if not isinstance(labels, dict):
            raise ValueError(f"labels should be an object, got {type(labels).__name__}")
        label_tail(labels)
    except ValueError as e:
        raise BundleError(f"{where}: {e}") from None
    return Manifest(
        root=root,
        method=method,
        config=config,
        input=inp,
        class_names=tuple(names),
        palette=tuple(tuple(p) for p in palette),
        graphs=graphs,
        state=state,
        scheduler=scheduler,
        provenance=raw.get("provenance", {}),
        raw=raw,
        labels=labels,
    )


# --- writing (shared by the exporters and calibration; still torch-free) ---------------


@contextmanager
def staged_bundle(out_dir: str | Path):
    """Yield a private folder beside out_dir to write a bundle into; on success publish it.

    Publishing validates the folder with load_manifest, then renames it onto out_dir
    (an old bundle there is renamed aside first and deleted after), so out_dir is
    never half written. VssEdgeError if out_dir exists and is not a bundle. On an
    exception nothing is published and the folder is removed.
    """
    from vss_edge.runtime.errors import OUTPUT_ERRNOS, OutputError, VssEdgeError

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).exists())):
        raise VssEdgeError(f"--out '{out}' exists and is not a vss-edge bundle; refusing to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is a normal folder
    except OSError as e:
        raise OutputError(f"cannot write bundle '{out}': {e.strerror or e}") from None
    try:
        try:
            yield tmp
        except OSError as e:  # the disk filled up, or a file in it could not be written
            if e.errno not in OUTPUT_ERRNOS:
                raise
            raise OutputError(f"cannot write bundle '{out}': {e.strerror or e}"
                              + (f" ('{Path(e.filename).name}')" if e.filename else "")) from None
        load_manifest(tmp)  # the runtime's reader must accept what was written
        try:
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / out.name)
                try:
                    os.replace(tmp, out)
                except OSError:
                    os.replace(old / out.name, out)  # put the old bundle back
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except OSError as e:
            raise OutputError(f"cannot publish bundle '{out}': {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
