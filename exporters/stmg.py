"""Export STMG into a bundle of four graphs: keyframe net, mask generator, partial
(gated) non-key backbone, aggregation + head."""
from __future__ import annotations

from pathlib import Path

import torch

from vss_edge.exporters.bundle import write_bundle
from vss_edge.exporters.gating import gate_blocks
from vss_edge.exporters.onnx_export import export_graph, real_frames
from vss_edge.runtime.manifest import TensorSpec, sha256_file
from vss_edge.configs import STMGConfig
from vss_edge.models.stmg.graphs import GRAPH_ROLES, INPUTS, OUTPUTS, STMG, block_scopes, stmg_graphs


def build_model(cfg: STMGConfig, checkpoint: str | None = None, ddrnet_checkpoint: str | None = None,
                seed: int = 0) -> tuple[STMG, dict]:
    """STMG in eval mode; (model, provenance of the weights).

    checkpoint: an STMG state_dict (key.*, nonkey.*, mask_generator.*).
    ddrnet_checkpoint: an official DDRNet checkpoint, loaded into both the key and the
    non-key backbone (the mask generator stays as initialised unless `checkpoint` gives it).
    Without either: seeded random weights.
    """
    torch.manual_seed(seed)
    model = STMG(cfg).eval()
    weights: dict = {part: {"random_init_seed": seed} for part in ("key", "nonkey", "mask_generator")}
    if ddrnet_checkpoint:
        from vss_edge.models.stmg.checkpoints import load_ddrnet_checkpoint

        source = {"file": Path(ddrnet_checkpoint).name, "sha256": sha256_file(Path(ddrnet_checkpoint))}
        for part in ("key", "nonkey"):
            note = load_ddrnet_checkpoint(getattr(model, part), ddrnet_checkpoint)
            weights[part] = {**source, **({"note": note} if note else {})}
    if checkpoint:
        from vss_edge.models.stmg.checkpoints import load_stmg_checkpoint

        load_stmg_checkpoint(model, checkpoint)
        source = {"file": Path(checkpoint).name, "sha256": sha256_file(Path(checkpoint))}
        weights = {part: dict(source) for part in ("key", "nonkey", "mask_generator")}
    return model, weights


@torch.no_grad()
def example_inputs(model: STMG, frames: list[torch.Tensor]) -> dict[str, list[tuple]]:
    """Real inputs for each graph: frame 0 is a key frame, the others non-key with the
    generator's keep masks, plus all-kept, all-dropped and alternating masks."""
    graphs = stmg_graphs(model)
    k = model.cfg.num_blocks
    _, _, features = graphs["keyframe"](frames[0])
    encoding = torch.zeros_like(model.mask_generator.encoder(model.normalise(frames[0])))
    examples = {"keyframe": [(f,) for f in frames[:2]], "mask": [], "partial": [], "aggregation": []}
    forced = [torch.ones(k, dtype=torch.bool), torch.zeros(k, dtype=torch.bool), torch.arange(k) % 2 == 0]
    for i, frame in enumerate(frames):
        examples["mask"].append((frame, encoding))
        encoding, spatial_mask, keep, _, _ = graphs["mask"](frame, encoding)
        if i == 0:
            continue
        for mask in [keep] + ([forced[i - 1]] if i - 1 < len(forced) else []):
            examples["partial"].append((frame, mask))
        current = graphs["partial"](frame, keep)
        examples["aggregation"].append((current, features, spatial_mask))
        _, _, features = graphs["aggregation"](current, features, spatial_mask)
    return examples


def export_stmg(out_dir: str | Path, cfg: STMGConfig, checkpoint: str | None = None,
                ddrnet_checkpoint: str | None = None, video: str | None = None, verify_frames: int = 4,
                seed: int = 0, simplify: bool = True) -> Path:
    """Build, export, verify on real frames (the partial graph with several keep masks) and write the bundle."""
    model, weights = build_model(cfg, checkpoint, ddrnet_checkpoint, seed)
    examples = example_inputs(model, real_frames(cfg.height, cfg.width, video, max(4, verify_frames)))
    scopes = block_scopes(model)
    exported = []
    for name, module in stmg_graphs(model).items():
        transform = (lambda m: gate_blocks(m, scopes, "keep")) if name == "partial" else None
        graph = export_graph(name, module, examples[name], INPUTS[name], OUTPUTS[name], simplify, transform)
        exported.append((graph, GRAPH_ROLES[name]))
    h, w = cfg.feature_size
    channels = {t.name: t.shape for t in exported[0][0].outputs}["features"][1]
    state = [TensorSpec("encoding", (1, cfg.encoder_channels, h, w), "float32"),
             TensorSpec("features", (1, channels, h, w), "float32")]
    return write_bundle(
        out_dir, method="stmg", cfg=cfg, network_channel_order="RGB", graphs=exported, state=state,
        scheduler={"name": "distortion", "params": {"gamma_key": cfg.gamma_key, "gamma_nonkey": cfg.gamma_nonkey}},
        checkpoints=weights,
        label_tail={"kind": "logits", "align_corners": False},
    )
