"""What a new user installs: one import namespace, every dependency declared, a runtime-only
wheel that runs (no torch, no onnx), the shipped demo bundle true to the committed weights, and
--threads bounded by the machine."""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
import time
import tomllib
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# The repository's folders and the import names they install as (pyproject.toml's package-dir).
FOLDERS = {"vss_edge": "vss_edge", "runtime": "vss_edge.runtime", "exporters": "vss_edge.exporters",
           "calibration": "vss_edge.calibration"}
# Which extra each module's third-party imports belong to; any other module is the runtime's.
EXTRA_OF = {"vss_edge.exporters": "export", "vss_edge.models": "export", "vss_edge.reference": "export",
            "vss_edge.checkpoints": "export", "vss_edge.training": "train",
            "vss_edge.calibration.quantize": "calibrate", "vss_edge.calibration.derived": "calibrate",
            "vss_edge.calibration.graph_analysis": "calibrate", "vss_edge.calibration.int8": "calibrate",
            "vss_edge.calibration.int8_rewrites": "calibrate", "vss_edge.calibration.int8_gates": "calibrate",
            "vss_edge.calibration.budget": "calibrate",
            "vss_edge.calibration.node_errors": "calibrate",
            "vss_edge.calibration.fp16": "calibrate", "vss_edge.fleet": "fleet",
            "vss_edge.runtime.openvino_session": "openvino"}
# Import names whose distribution is not their own name (importlib.metadata cannot tell which of
# several installed distributions provide one, e.g. onnxruntime and onnxruntime-gpu).
DISTRIBUTION_OF = {"cv2": "opencv-python", "onnxruntime": "onnxruntime-gpu"}


def _modules() -> dict[str, Path]:
    """Installed module name -> source file, for every .py file of the four folders."""
    found = {}
    for folder, package in FOLDERS.items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = list(f.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = f
    return found


def _third_party_imports(path: Path) -> set[str]:
    std = set(sys.stdlib_module_names)
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        tops |= {n.split(".")[0] for n in names} - std - {"vss_edge", "__future__"}
    return tops


def _declared() -> dict[str, set[str]]:
    """extra ('' = the runtime) -> distribution names it installs, extras of extras expanded."""
    direct: dict[str, set[str]] = {}
    for req in md.requires("vss-edge") or []:
        name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        marker = re.search(r'extra\s*==\s*"([^"]+)"', req)
        extra = marker.group(1) if marker else ""
        if name == "vss-edge":  # vss-edge[a,b] inside an extra
            inner = re.search(r"\[([^\]]+)\]", req).group(1)
            direct.setdefault(extra, set()).update(f"[{e.strip()}]" for e in inner.split(","))
        else:
            direct.setdefault(extra, set()).add(name)

    def expand(extra: str) -> set[str]:
        out = set()
        for item in direct.get(extra, set()):
            out |= expand(item[1:-1]) if item.startswith("[") else {item}
        return out

    return {extra: expand(extra) | expand("") for extra in direct}


def test_every_third_party_import_is_declared_in_its_extra():
    declared = _declared()
    assert "torch" not in declared[""] and "onnx" not in declared[""] and "scipy" not in declared[""]
    problems = []
    for module, path in _modules().items():
        extra = next((e for prefix, e in EXTRA_OF.items() if module == prefix or module.startswith(prefix + ".")), "")
        for top in sorted(_third_party_imports(path)):
            dist = DISTRIBUTION_OF.get(top, top).lower().replace("_", "-")
            if dist not in declared.get(extra, set()):
                problems.append(f"{module} imports {top} ({dist}), not declared in {extra or 'the runtime'}'s "
                                f"dependencies")
    assert not problems, "\n".join(problems)


def test_pyproject_lists_every_package_folder_under_vss_edge():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    on_disk = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert sorted(config["packages"]) == sorted(on_disk)


def test_code_imports_our_modules_only_through_vss_edge():
    bare = re.compile(r"^\s*(from|import)\s+(runtime|exporters|calibration)\b", re.M)
    offenders = [str(f.relative_to(REPO)) for folder in (*FOLDERS, "tests", "benchmarks", "scripts")
                 for f in (REPO / folder).rglob("*.py") if bare.search(f.read_text(encoding="utf-8"))]
    assert not offenders


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The distribution as `pip install .` builds it (no extras)."""
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tree: building in place would leave build/ in the checkout, whose stale files
    # a later build would package.
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".gpu", "build", "out",
                                                                 "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True)
    (found,) = out.glob("vss_edge-*.whl")
    return found


def test_wheel_owns_only_the_vss_edge_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"vss_edge"}
    for expected in ("vss_edge/runtime/session.py", "vss_edge/runtime/programs/gsvnet.py",
                     "vss_edge/exporters/gsvnet.py", "vss_edge/calibration/check.py", "vss_edge/data/sample.mp4",
                     "vss_edge/data/demo_bundle/manifest.json", "vss_edge/data/demo_bundle/keyframe.onnx"):
        assert expected in names


def test_runtime_only_wheel_runs_a_bundle_and_the_demo_without_torch_or_onnx(wheel, tmp_path):
    """`pip install vss_edge-*.whl` in a new virtual environment (no extras): run and demo work."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python, cli = bindir / "python", bindir / "vss-edge"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"  # not the checkout: nothing of it is importable from here
    work.mkdir()
    probe = ("import importlib.util, vss_edge, sys; from vss_edge import demo_weights; from vss_edge.runtime import sources;"
             "print(demo_weights.DEMO_BUNDLE); print(sources.sample_clip_path());"
             "print([m for m in ('torch', 'onnx', 'onnxsim', 'scipy') if importlib.util.find_spec(m)])")
    done = subprocess.run([str(python), "-c", probe], cwd=work, capture_output=True, text=True, check=True)
    bundle, clip, present = done.stdout.splitlines()
    assert present == "[]" and "site-packages" in bundle
    run = subprocess.run([str(cli), "-q", "run", bundle, clip, "--out", str(work / "run"), "--max-frames", "6"],
                         cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "6 frames (2 key)" in run.stdout
    demo = subprocess.run([str(cli), "-q", "demo", "--out", str(work / "demo")], cwd=work, capture_output=True,
                          text=True)
    assert demo.returncode == 0, demo.stderr
    assert "prebuilt demo bundle" in demo.stderr and (work / "demo" / "overlay.mp4").is_file()
    other = subprocess.run([str(cli), "demo", "--out", str(work / "d2"), "--height", "256"], cwd=work,
                           capture_output=True, text=True)
    assert other.returncode == 2 and "vss-edge[export]" in other.stderr and "Traceback" not in other.stderr


def test_shipped_demo_bundle_gives_the_labels_of_a_fresh_export(tmp_path, sample_frames):
    """The prebuilt bundle cannot drift from the committed weights and the exporter."""
    import vss_edge
    from vss_edge import demo_weights

    fresh = demo_weights.export_gsvnet_demo(tmp_path / "fresh")
    shipped = vss_edge.load(demo_weights.DEMO_BUNDLE, device="cpu", threads=1)
    exported = vss_edge.load(fresh, device="cpu", threads=1)
    assert shipped.manifest.config == exported.manifest.config
    for i, frame in enumerate(sample_frames):
        a, b = shipped.step(frame), exported.step(frame)
        assert a.is_key == b.is_key
        assert np.array_equal(a.labels, b.labels), f"frame {i}: {np.mean(a.labels != b.labels):.5f} of pixels differ"


def test_threads_beyond_the_cpus_is_one_line_exit_2_at_once(capsys):
    from vss_edge.cli import main
    from vss_edge.runtime.session import usable_cpus

    too_many = usable_cpus() + 1
    for verb in (["run", "no-bundle", "no-source", "--out", "o"], ["profile", "no-bundle", "no-source"],
                 ["eval", "no-bundle", "--synthetic"]):
        t0 = time.perf_counter()
        assert main([*verb, "--threads", str(too_many)]) == 2
        assert time.perf_counter() - t0 < 0.5
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--threads {too_many}" in err and f"choose 1 to {usable_cpus()}" in err


def test_load_refuses_threads_beyond_the_cpus(gsvnet_bundle):
    import vss_edge
    from vss_edge.runtime.session import usable_cpus

    with pytest.raises(vss_edge.VssEdgeError, match="more than the"):
        vss_edge.load(gsvnet_bundle, device="cpu", threads=usable_cpus() + 1)
    with pytest.raises(vss_edge.VssEdgeError, match="positive integer"):
        vss_edge.load(gsvnet_bundle, device="cpu", threads=0)
    assert vss_edge.load(gsvnet_bundle, device="cpu", threads=usable_cpus()).step(
        np.zeros((64, 64, 3), np.uint8)).is_key



def test_every_graph_session_spins_only_within_a_run(gsvnet_bundle):
    """Per-session pools: workers spin between the ops of a run and stop at its end, for every graph of
    a key-frame method (the small non-key graphs lose 20-25% without spinning; spinning past the run
    doubles the frame)."""
    import vss_edge

    pipe = vss_edge.load(gsvnet_bundle, device="cpu", threads=2)
    for name, graph in pipe.sessions.items():
        options = graph.session.get_session_options()

        def entry(key):
            try:
                return options.get_session_config_entry(key)
            except Exception:  # not set
                return None
        assert entry("session.force_spinning_stop") == "1", name
        assert entry("session.intra_op.allow_spinning") in (None, "1"), name

def test_ci_runs_the_readme_test_command_in_a_new_virtual_environment():
    readme = (REPO / "README.md").read_text()
    block = readme.split("Run the tests", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert block.startswith("python -m pip install") and block in ci.splitlines()
    assert "-m venv" in ci and "mktemp" in ci and ci.index("-m venv") < ci.index(block)
