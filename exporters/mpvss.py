"""Export MPVSS into a bundle: Mask2Former keyframe graph, query-based flow graph and
mask-propagation graph (only the keyframe graph for the 'copy' baseline)."""
from __future__ import annotations

from pathlib import Path

import torch

from vss_edge.exporters.bundle import write_bundle
from vss_edge.exporters.onnx_export import export_graph, real_frames
from vss_edge.runtime.manifest import TensorSpec, sha256_file
from vss_edge.configs import MPVSSConfig
from vss_edge.models.mpvss.graphs import GRAPH_ROLES, OUTPUTS, MPVSS, graph_inputs, mpvss_graphs


@torch.no_grad()
def _lively_random_heads(model: MPVSS, seed: int) -> None:
    """Seeded random weights only: make a random bundle's labels and flows not constant.

    Random Mask2Former heads collapse: the decoder's queries come out nearly parallel, a random
    Linear class head gives near-uniform probabilities and the mask features share one large
    offset, so one class wins everywhere; and the official flow init (fuse_layer weight 0,
    bias 1) makes every flow exactly 1. Parity on such outputs would prove nothing. So, on
    frame 0 of the shipped sample clip (deterministic): centre the mask features per channel
    (mask_features bias) and the final queries across queries (decoder_norm bias), redraw the
    class head (std 6/sqrt(C)), scale the mask embedding to mask logits of std 5, and draw the
    fuse layer N(0, 4). Official weights replace all of this.
    """
    from vss_edge.exporters.onnx_export import real_frames

    cfg = model.cfg
    c = cfg.arch["hidden_dim"]
    g = torch.Generator().manual_seed(seed)  # its own stream: the segmentor is the same for every propagation
    head = model.sem_seg_head
    frame = real_frames(cfg.height, cfg.width, None, 1)[0]
    features = model.backbone(model.pad(model.normalise(frame)))
    mask_features, _ = head.pixel_decoder(features)
    head.pixel_decoder.mask_features.bias.sub_(mask_features.mean(dim=(0, 2, 3)))
    _, _, queries = model.segment(frame)
    head.predictor.decoder_norm.bias.sub_(queries[0].mean(0))
    head.predictor.class_embed.weight.normal_(0.0, 6.0 / c ** 0.5, generator=g)
    head.predictor.class_embed.bias.zero_()
    _, mask_logits, _ = model.segment(frame)
    last = head.predictor.mask_embed.layers[-1]
    scale = 5.0 / max(float(mask_logits.std()), 1e-6)
    last.weight.mul_(scale)
    last.bias.mul_(scale)
    if cfg.propagation == "query_flow":
        fuse = model.motion.decoder.fuse_layer.conv
        fuse.weight.normal_(0.0, 4.0, generator=g)
        fuse.bias.zero_()


def build_model(cfg: MPVSSConfig, checkpoint: str | None = None, mask2former_checkpoint: str | None = None,
                seed: int = 0) -> tuple[MPVSS, dict]:
    """MPVSS in eval mode; (model, provenance of the weights per part).

    mask2former_checkpoint: official Mask2Former weights (backbone.*, sem_seg_head.*; the
    R50 semantic-segmentation checkpoints) for the key-frame segmentor; the flow module stays
    seeded-random unless `checkpoint` gives it.
    checkpoint: an MPVSS checkpoint (the official MPVSS meta-architecture's state_dict:
    backbone.*, motion.*, sem_seg_head.*), loaded strictly.
    """
    torch.manual_seed(seed)
    model = MPVSS(cfg).eval()
    _lively_random_heads(model, seed)
    parts = ("segmentor", "motion") if model.motion is not None else ("segmentor",)
    weights: dict = {part: {"random_init_seed": seed} for part in parts}
    if mask2former_checkpoint:
        from vss_edge.models.mpvss.checkpoints import load_mask2former_checkpoint

        note = load_mask2former_checkpoint(model, mask2former_checkpoint)
        path = Path(mask2former_checkpoint)
        weights["segmentor"] = {"file": path.name, "sha256": sha256_file(path), **({"note": note} if note else {})}
    if checkpoint:
        from vss_edge.models.mpvss.checkpoints import load_mpvss_checkpoint

        note = load_mpvss_checkpoint(model, checkpoint)
        path = Path(checkpoint)
        source = {"file": path.name, "sha256": sha256_file(path), **({"note": note} if note else {})}
        weights = {part: dict(source) for part in parts}
    return model, weights


@torch.no_grad()
def example_inputs(model: MPVSS, frames: list[torch.Tensor]) -> dict[str, list[tuple]]:
    """Real inputs for each graph: frame 0 is the key frame, the others are propagated from it."""
    graphs = mpvss_graphs(model)
    examples: dict[str, list[tuple]] = {name: [] for name in graphs}
    examples["keyframe"] = [(f,) for f in frames[:2]]
    if "flow" not in graphs:
        return examples
    _, class_logits, mask_logits, queries, key_image = graphs["keyframe"](frames[0])
    with_queries = model.cfg.propagation == "query_flow"
    for frame in frames[1:]:
        examples["flow"].append((frame, key_image, queries) if with_queries else (frame, key_image))
        flow = graphs["flow"](*examples["flow"][-1])
        examples["propagation"].append((mask_logits, class_logits, flow))
    return examples


def state_specs(cfg: MPVSSConfig) -> list[TensorSpec]:
    """The tensors kept from the key frame (all of them keyframe-graph outputs)."""
    n, c = cfg.num_queries, cfg.arch["hidden_dim"]
    h4, w4 = cfg.mask_size
    fh, fw = cfg.flow_image_size
    hl, wl = cfg.label_size
    if cfg.propagation == "copy" and cfg.label_path == "graph":
        return [TensorSpec("labels", (1, hl, wl), "uint8")]
    if cfg.propagation == "copy":  # host labels: the key frame's labels come from these
        return [TensorSpec("class_logits", (1, n, cfg.num_classes + 1), "float32"),
                TensorSpec("mask_logits", (1, n, h4, w4), "float32")]
    return [TensorSpec("class_logits", (1, n, cfg.num_classes + 1), "float32"),
            TensorSpec("mask_logits", (1, n, h4, w4), "float32"),
            TensorSpec("queries", (1, n, c), "float32"),
            TensorSpec("key_image", (1, 3, fh, fw), "float32")]


def export_mpvss(out_dir: str | Path, cfg: MPVSSConfig, checkpoint: str | None = None,
                 mask2former_checkpoint: str | None = None, video: str | None = None, verify_frames: int = 4,
                 seed: int = 0, simplify: bool = True) -> Path:
    """Build, export, verify every graph on real frames and write the bundle; returns its path.

    verify_frames: frames of the video the graphs are checked on (frame 0 the key frame);
    1 checks the keyframe graph on one frame and each other graph on one propagated frame.
    """
    model, weights = build_model(cfg, checkpoint, mask2former_checkpoint, seed)
    examples = example_inputs(model, real_frames(cfg.height, cfg.width, video, max(2, verify_frames)))
    if verify_frames < 2:
        examples = {name: ex[:1] for name, ex in examples.items()}
    exported = []
    inputs = graph_inputs(cfg.propagation)
    for name, module in mpvss_graphs(model).items():
        graph = export_graph(name, module, examples[name], inputs[name], OUTPUTS[name], simplify)
        exported.append((graph, GRAPH_ROLES[name]))
    return write_bundle(
        out_dir, method="mpvss", cfg=cfg, network_channel_order="RGB", graphs=exported, state=state_specs(cfg),
        scheduler={"name": "fixed_interval", "params": {"interval": cfg.interval}}, checkpoints=weights,
        label_tail={"kind": "masks"},
    )
