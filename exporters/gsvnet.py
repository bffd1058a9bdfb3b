"""Export GSVNet into a bundle of three graphs: keyframe net, flow net, propagation head."""
from __future__ import annotations

from pathlib import Path

import torch

from vss_edge.exporters.bundle import write_bundle
from vss_edge.exporters.onnx_export import export_graph, real_frames
from vss_edge.runtime.manifest import TensorSpec, sha256_file
from vss_edge.configs import GSVNetConfig
from vss_edge.models.gsvnet.graphs import GSVNet

ROLES = {"keyframe": "keyframe_net", "flow": "flow_net", "propagation": "propagation_head"}
IO_NAMES = {
    "keyframe": (["image"], ["logits", "labels", "image_small"]),
    "flow": (["image", "prev_image_small"], ["flow", "image_small"]),
    "propagation": (["prev_logits", "image_small", "flow"], ["logits", "labels"]),
}


def build_model(cfg: GSVNetConfig, checkpoint: str | None = None, keyframe_checkpoint: str | None = None,
                seed: int = 0) -> tuple[GSVNet, dict]:
    """GSVNet in eval mode with official weights loaded, or seeded random weights.

    Returns (model, provenance of the weights).
    """
    from vss_edge.models.gsvnet.checkpoints import load_gsvnet_checkpoint, load_keyframe_checkpoint

    torch.manual_seed(seed)
    model = GSVNet(cfg).eval()
    weights = {}
    for part, path, load in (("keyframe", keyframe_checkpoint, load_keyframe_checkpoint),
                             ("gsvnet", checkpoint, load_gsvnet_checkpoint)):
        if path:
            load(model, path)
            weights[part] = {"file": Path(path).name, "sha256": sha256_file(Path(path))}
        else:
            weights[part] = {"random_init_seed": seed}
    return model, weights


@torch.no_grad()
def example_inputs(model: GSVNet, frames: list[torch.Tensor]) -> dict[str, list[tuple]]:
    """Real inputs for each graph: frame 0 is a key frame, the rest are propagated from it."""
    graphs = model.graphs()
    logits, _, small = graphs["keyframe"](frames[0])
    examples = {"keyframe": [(f,) for f in frames[:2]], "flow": [], "propagation": []}
    for frame in frames[1:]:
        examples["flow"].append((frame, small))
        flow, small = graphs["flow"](frame, small)
        examples["propagation"].append((logits, small, flow))
        logits, _ = graphs["propagation"](logits, small, flow)
    return examples


def export_gsvnet(out_dir: str | Path, cfg: GSVNetConfig, checkpoint: str | None = None,
                  keyframe_checkpoint: str | None = None, video: str | None = None,
                  verify_frames: int = 4, seed: int = 0, simplify: bool = True) -> Path:
    """Build, export, verify on real frames and write the bundle; returns its path."""
    model, weights = build_model(cfg, checkpoint, keyframe_checkpoint, seed)
    examples = example_inputs(model, real_frames(cfg.height, cfg.width, video, max(2, verify_frames)))
    exported = []
    for name, module in model.graphs().items():
        inputs, outputs = IO_NAMES[name]
        exported.append((export_graph(name, module, examples[name], inputs, outputs, simplify), ROLES[name]))
    h, w = cfg.small_size
    state = [TensorSpec("logits", (1, cfg.num_classes, h, w), "float32"),
             TensorSpec("image_small", (1, 3, h, w), "float32")]
    return write_bundle(
        out_dir, method="gsvnet", cfg=cfg, network_channel_order="BGR", graphs=exported, state=state,
        scheduler={"name": "fixed_interval", "params": {"interval": cfg.interval}}, checkpoints=weights,
        label_tail={"kind": "logits", "align_corners": True},
    )



