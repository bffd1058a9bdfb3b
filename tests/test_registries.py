"""A fifth method moves in through the registries alone: config, model, exporter, Program and
MethodSpec are declared in this test, no project file is touched, and the CLI's export, run,
profile, calibrate and check verbs work on it (CONTRIBUTING.md: "Adding a method").

The toy method is the smallest honest one: a key-frame-only graph (in-graph normalisation, a
1x1 convolution to 3 class scores, argmax) that every frame runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxsim")

from vss_edge.cli import main  # noqa: E402
from vss_edge.configs import MethodConfig  # noqa: E402
from vss_edge.methods import METHODS, MethodSpec  # noqa: E402
from vss_edge.runtime.manifest import GraphUse  # noqa: E402
from vss_edge.runtime.programs.base import PROGRAMS, Program  # noqa: E402
from vss_edge.runtime.sources import read_frames, sample_clip_path  # noqa: E402

CLIP = str(sample_clip_path())
TOY_NORMALISATION = {"scale": 1.0 / 255.0, "mean_rgb": [0.5, 0.5, 0.5], "std_rgb": [0.25, 0.25, 0.25]}


@dataclass
class ToyConfig(MethodConfig):
    """The toy's config: the common fields and nothing else."""

    height: int = 64
    width: int = 96
    num_classes: int = 3
    label_scale: float = 1.0
    label_path: str = "graph"
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def check(self) -> None:
        if self.label_scale != 1.0 or self.label_path != "graph":
            raise ValueError("the toy labels every input pixel in its graph: label_scale 1, label_path 'graph'")

    @property
    def normalisation(self) -> dict:
        return TOY_NORMALISATION


class ToyKeyframe(torch.nn.Module):
    """uint8 [1, H, W, 3] BGR -> (float32 logits [1, K, H, W], uint8 labels [1, H, W])."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        n = cfg.normalisation
        self.register_buffer("mean", torch.tensor(n["mean_rgb"][::-1]).view(1, 3, 1, 1) / n["scale"])
        self.register_buffer("std", torch.tensor(n["std_rgb"][::-1]).view(1, 3, 1, 1) / n["scale"])
        self.classify = torch.nn.Conv2d(3, cfg.num_classes, 1)

    def forward(self, image):
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
        logits = self.classify(x)
        return logits, logits.argmax(1).to(torch.uint8)


def export_toy(out_dir, cfg: ToyConfig, *, video=None, verify_frames=4, seed=0, simplify=True):
    """The one exporter signature (vss_edge.methods): build, export and verify, write the bundle."""
    from vss_edge.exporters.bundle import write_bundle
    from vss_edge.exporters.onnx_export import export_graph, real_frames

    torch.manual_seed(seed)
    model = ToyKeyframe(cfg).eval()
    examples = [(f,) for f in real_frames(cfg.height, cfg.width, video, max(2, verify_frames))]
    graph = export_graph("keyframe", model, examples, ["image"], ["logits", "labels"], simplify)
    return write_bundle(out_dir, method="toy", cfg=cfg, network_channel_order="BGR",
                        graphs=[(graph, "keyframe_net")], state=[],
                        scheduler={"name": "fixed_interval", "params": {"interval": 1}},
                        checkpoints={"keyframe": {"random_init_seed": seed}})


class ToyProgram(Program):
    """Every frame is a key frame: the keyframe graph labels it; nothing moves between frames."""

    graphs = ("keyframe",)
    uses = {"keyframe": GraphUse("keyframe_net", ("image",), ("labels",))}

    def reset_state(self) -> None:
        pass

    @property
    def has_state(self) -> bool:
        return False

    def step(self, image, is_key, run):
        return run("keyframe", {"image": image}, ("labels",))["labels"]


class ToyReference:
    """The PyTorch side of the toy, as the built-in references are (vss_edge.reference)."""

    def __init__(self, model: ToyKeyframe):
        self.model = model


TOY = MethodSpec(
    name="toy", summary="toy: one key-frame graph on every frame (tests)", config=ToyConfig,
    exporter=export_toy, reference=ToyReference, make_config=lambda args, common: ToyConfig(**common),
    height=64, width=96, classes=3,
)


@pytest.fixture
def toy_registered(monkeypatch):
    """The toy method in both registries for one test, and gone after it."""
    from vss_edge.runtime.programs.base import register_program

    monkeypatch.setitem(METHODS, "toy", TOY)
    monkeypatch.delitem(PROGRAMS, "toy", raising=False)
    register_program("toy")(ToyProgram)
    yield
    PROGRAMS.pop("toy", None)


def test_a_fifth_method_exports_runs_profiles_calibrates_and_checks_through_the_registries(
        toy_registered, tmp_path, capsys):
    bundle = tmp_path / "toy"
    assert main(["-q", "export", "toy", "--out", str(bundle), "--height", "64", "--width", "96"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["method"] == "toy" and list(manifest["graphs"]) == ["keyframe"]
    assert manifest["classes"]["names"] == ToyConfig().class_names

    out = tmp_path / "run"
    assert main(["-q", "run", str(bundle), CLIP, "--out", str(out), "--save-labels", "--max-frames", "12",
                 "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["key_frames"] == 12
    assert len(list((out / "labels").glob("*.png"))) == 12

    # The labels are the PyTorch module's on the same frames (the toy has no ties to explain:
    # its scores are a 1x1 convolution of real pixels).
    import cv2

    from vss_edge.runtime.preprocess import to_graph_input

    torch.manual_seed(0)  # the exporter's default seed: the same weights
    model = ToyKeyframe(ToyConfig()).eval()
    for i, frame in enumerate(read_frames(CLIP, 0, 3)):
        with torch.no_grad():
            _, expected = model(torch.from_numpy(to_graph_input(frame, 64, 96)))
        expected = cv2.resize(expected[0].numpy(), (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
        written = cv2.imread(str(out / "labels" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, expected), f"frame {i}"

    report = tmp_path / "profile.json"
    assert main(["-q", "profile", str(bundle), CLIP, "--max-frames", "10", "--threads", "1",
                 "--json", str(report)]) == 0
    profile = json.loads(report.read_text())
    assert profile["frame"]["count"] > 0 and set(profile["graphs"]) == {"keyframe"}

    fp16 = tmp_path / "toy-fp16"
    assert main(["-q", "calibrate", str(bundle), CLIP, "--precision", "fp16", "--out", str(fp16)]) == 0
    check = tmp_path / "check.json"
    assert main(["-q", "check", str(bundle), str(fp16), CLIP, "--frames", "0:12", "--json", str(check)]) == 0
    result = json.loads(check.read_text())
    assert result["end_to_end"]["agreement"]["miou"] > 0.98  # measured 0.9984
    capsys.readouterr()


def test_the_toy_is_gone_after_its_test():
    """Registration in a test stays in that test: the project's registries hold the four methods."""
    assert "toy" not in METHODS and "toy" not in PROGRAMS
    assert set(METHODS) == {"gsvnet", "tdnet", "stmg", "mpvss"} == set(PROGRAMS)


def test_a_graph_with_an_output_of_unknown_size_is_refused_at_export():
    """Bundles hold static graphs (the manifest, calibration and the runtime rely on it): an exported
    graph whose input or output size ONNX Runtime cannot tell (here, data-dependent) is refused by name."""
    from vss_edge.exporters.onnx_export import ExportError, export_graph

    class Positives(torch.nn.Module):
        def forward(self, x):
            return torch.nonzero(x > 0)

    with pytest.raises(ExportError, match=r"'positives' has inputs or outputs of unknown size.*where"):
        export_graph("positives", Positives(), [(torch.randn(1, 3, 4, 4),)], ["x"], ["where"], simplify=False)
