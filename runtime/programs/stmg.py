"""STMG's algorithm over its four graphs (Rhee et al. 2022, Sec. 3 and Algorithm 1).

Every frame:    mask(image, prev_encoding) -> encoding, spatial_mask, keep, distortion
                (the distortion feeds the scheduler; the encoding is kept, it is the next
                frame's t = Enc_f(I_prev))
Key frame:      keyframe(image) -> labels, features
Non-key frame:  partial(image, keep) -> features of the pruned non-key backbone
                aggregation(current_features, prev_features, spatial_mask) -> labels, blended features
State: the previous frame's encoder features and the features its head saw.
"""
from __future__ import annotations

import numpy as np

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.programs.base import Program, register_program


@register_program("stmg")
class STMGProgram(Program):
    """The mask generator runs on every frame, in signals(): its distortion is the scheduler's signal."""

    graphs = ("keyframe", "mask", "partial", "aggregation")
    uses = {  # what signals() and step() feed each graph and read back (checked at load)
        "keyframe": GraphUse("keyframe_net", ("image",), ("labels", "features")),
        "mask": GraphUse("mask_generator", ("image", "prev_encoding"), ("encoding", "spatial_mask", "keep", "distortion")),
        "partial": GraphUse("partial_net", ("image", "keep"), ("features",)),
        "aggregation": GraphUse("propagation_head", ("current_features", "prev_features", "spatial_mask"),
                                ("labels", "features")),
    }

    def __init__(self, manifest):
        super().__init__(manifest)
        state = {t.name: t for t in manifest.state}
        missing = {"encoding", "features"} - set(state)
        if missing:
            raise BundleError(f"bundle '{manifest.root}': STMG state lacks {sorted(missing)}")
        self.empty_encoding = np.zeros(state["encoding"].shape, dtype=np.float32)
        keep = {t.name: t for t in manifest.graphs["partial"].inputs}.get("keep") if "partial" in manifest.graphs \
            else None
        self.num_blocks = int(keep.shape[0]) if keep is not None else 0
        self.keep_override: np.ndarray | None = None  # bool [K]: force which blocks run (ablations, tests)
        self.last_keep: np.ndarray | None = None  # bool [K] used on the last non-key frame
        self.reset_state()

    def reset_state(self) -> None:
        self.encoding = None
        self.features = None
        self.masks: dict | None = None

    @property
    def has_state(self) -> bool:
        return self.features is not None

    def force_keep(self, keep) -> None:
        """Run exactly these prunable blocks on non-key frames (None: the generator decides)."""
        if keep is None:
            self.keep_override = None
            return
        keep = np.asarray(keep)
        if keep.shape != (self.num_blocks,):
            raise VssEdgeError(f"keep must have {self.num_blocks} entries (one per prunable block), got shape {keep.shape}")
        self.keep_override = keep.astype(bool)

    def signals(self, image, needed: tuple[str, ...], run) -> dict:
        """Run the mask generator (every frame: its encoding is the next frame's t)."""
        prev = self.encoding if self.encoding is not None else self.empty_encoding
        out = run("mask", {"image": image, "prev_encoding": prev}, ("keep", "distortion"))
        self.encoding = out["encoding"]
        self.masks = out
        return {"distortion": float(np.asarray(out["distortion"]).reshape(-1)[0])}

    def step(self, image, is_key: bool, run):
        """Process one uint8 [1,H,W,3] frame (after signals()); returns uint8 labels [1,H,W]."""
        if is_key:
            out = run("keyframe", {"image": image}, ("labels",))
        else:
            keep = self.keep_override if self.keep_override is not None else self.masks["keep"]
            self.last_keep = keep
            partial = run("partial", {"image": image, "keep": keep}, ())
            out = run("aggregation", {"current_features": partial["features"], "prev_features": self.features,
                                      "spatial_mask": self.masks["spatial_mask"]}, ("labels",))
        self.features = out["features"]
        return out["labels"]
