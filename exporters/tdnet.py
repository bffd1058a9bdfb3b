"""Export TDNet into a bundle of one graph per sub-network path (path0 .. path{N-1})."""
from __future__ import annotations

from pathlib import Path

import torch

from vss_edge.exporters.bundle import write_bundle
from vss_edge.exporters.onnx_export import export_graph, real_frames
from vss_edge.runtime.manifest import TensorSpec, sha256_file
from vss_edge.configs import TDNetConfig
from vss_edge.models.tdnet.graphs import OUTPUTS, empty_state, input_names, path_graphs

# How TDNet's labels come from its logits (the graphs' own tail, models.common.labels_from_logits):
# argmax of the logits resized bilinearly with align_corners=True, as the official evaluation.
# With cfg.label_path 'host' the runtime computes that on the host (exporters.bundle.host_labels).
LABEL_TAIL = {"kind": "logits", "align_corners": True}


def build_model(cfg: TDNetConfig, checkpoint: str | None = None, seed: int = 0):
    """TDNet in eval mode with official weights, or seeded random ones; (model, weights provenance)."""
    from vss_edge.models.tdnet import TDNet
    from vss_edge.models.tdnet.checkpoints import load_tdnet_checkpoint

    torch.manual_seed(seed)
    model = TDNet(cfg).eval()
    if checkpoint:
        note = load_tdnet_checkpoint(model, checkpoint)
        weights = {"tdnet": {"file": Path(checkpoint).name, "sha256": sha256_file(Path(checkpoint))}}
        if note:
            weights["tdnet"]["note"] = note
    else:
        weights = {"tdnet": {"random_init_seed": seed}}
    return model, weights


@torch.no_grad()
def example_inputs(model, frames: list[torch.Tensor]) -> dict[str, list[tuple]]:
    """Real inputs per path graph, frames run round robin (tuples in input_names order):
    warm-up frames (history 0) and frames with a full queue (history 1)."""
    graphs = path_graphs(model)
    n, length = len(graphs), model.cfg.queue_length
    empty = empty_state(model, frames[0])
    queue: list[dict] = []
    examples = {name: [] for name in graphs}
    for i, frame in enumerate(frames):
        full = len(queue) == length
        entries = queue if full else [empty] * length
        stored = [entries[0]["k"], entries[0]["v"]] + [e[x] for e in entries[1:] for x in ("q", "k", "v")]
        args = (frame, *stored, torch.tensor([1.0 if full else 0.0]))
        name = f"path{i % n}"
        examples[name].append(args)
        _, _, q, k, v = graphs[name](*args)
        queue = (queue + [{"q": q, "k": k, "v": v}])[-length:]
    return examples


def export_tdnet(out_dir: str | Path, cfg: TDNetConfig, checkpoint: str | None = None, video: str | None = None,
                 verify_frames: int = 0, seed: int = 0, simplify: bool = True) -> Path:
    """Build, export, verify every path on real frames (warm-up and full) and write the bundle.

    verify_frames: at least queue length + paths frames are used (every path then runs once with
    a full queue); more when asked."""
    model, weights = build_model(cfg, checkpoint, seed)
    n = cfg.num_paths
    frames = real_frames(cfg.height, cfg.width, video, max(verify_frames, cfg.queue_length + n))
    examples = example_inputs(model, frames)
    inputs = input_names(cfg.queue_length)
    exported = [(export_graph(name, module, examples[name], inputs, OUTPUTS, simplify), "path_net")
                for name, module in path_graphs(model).items()]
    return write_tdnet_bundle(out_dir, cfg, exported, weights)


def write_tdnet_bundle(out_dir: str | Path, cfg: TDNetConfig, exported: list, checkpoints: dict) -> Path:
    """Write exported path graphs [(ExportedGraph path0.., "path_net")] as a TDNet bundle: the state
    (q, k, v) as the first graph outputs them, round robin over these paths, and the label tail
    (LABEL_TAIL: with cfg.label_path 'host' the graphs lose it and the runtime computes the labels)."""
    outputs = {t.name: t for t in exported[0][0].outputs}
    state = [TensorSpec(name, outputs[name].shape, "float32") for name in ("q", "k", "v")]
    return write_bundle(
        out_dir, method="tdnet", cfg=cfg, network_channel_order="RGB", graphs=exported, state=state,
        scheduler={"name": "round_robin", "params": {"paths": len(exported)}}, checkpoints=checkpoints,
        label_tail=LABEL_TAIL,
    )
