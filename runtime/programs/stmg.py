"""STMG's algorithm over its four graphs (Rhee et al. 2022, Sec. 3 and Algorithm 1).

Every frame:    mask(image, prev_encoding) -> encoding, spatial_mask, keep, distortion
                (the distortion feeds the scheduler; the encoding is kept, it is the next
                frame's t = Enc_f(I_prev))
Key frame:      keyframe(image) -> labels, features
Non-key frame:  partial(image, keep) -> features of the pruned non-key backbone
                aggregation(current_features, prev_features, spatial_mask) -> labels, blended features
State: the previous frame's encoder features and the features its head saw.

Compute budget (set_budget, no re-export): keep_threshold replaces the exported threshold on
the generator's keep probabilities (a block runs iff its probability exceeds it: higher =
fewer blocks, faster), max_blocks caps the blocks a non-key frame runs (the most probable
ones). The key-frame rate is the scheduler's (--interval, or the distortion thresholds).
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
    budget_options = ("keep_threshold", "max_blocks")
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
        self.keep_threshold: float | None = None  # the compute budget (None: as exported)
        self.max_blocks: int | None = None
        self.kept_blocks = 0  # blocks run, summed over the non-key frames so far
        self.non_key_frames = 0
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

    def set_budget(self, keep_threshold: float | None = None, max_blocks: int | None = None) -> None:
        """keep_threshold in (0, 1) or None (the exported one); max_blocks in 0..K or None (no cap)."""
        super().set_budget(**{k: v for k, v in (("keep_threshold", keep_threshold), ("max_blocks", max_blocks))
                              if v is not None})
        if keep_threshold is not None and not 0.0 < float(keep_threshold) < 1.0:
            raise VssEdgeError(f"keep_threshold must be in (0, 1), got {keep_threshold}")
        if max_blocks is not None and (isinstance(max_blocks, bool) or not isinstance(max_blocks, int)
                                       or not 0 <= max_blocks <= self.num_blocks):
            raise VssEdgeError(f"max_blocks must be an int in 0..{self.num_blocks} (this bundle's prunable "
                               f"blocks), got {max_blocks!r}")
        outputs = {o.name for o in self.manifest.graphs["mask"].outputs}
        if (keep_threshold is not None or max_blocks is not None) and "keep_probability" not in outputs:
            raise VssEdgeError(f"bundle '{self.manifest.root}': its mask graph has no keep_probability output, "
                               f"which a compute budget ranks blocks by (re-export it)")
        self.keep_threshold = None if keep_threshold is None else float(keep_threshold)
        self.max_blocks = max_blocks

    def budget_report(self) -> dict:
        return {"keep_threshold": self.keep_threshold, "max_blocks": self.max_blocks, "blocks": self.num_blocks,
                "mean_kept_blocks": self.kept_blocks / self.non_key_frames if self.non_key_frames else None}

    def budget_keep(self, masks: dict) -> np.ndarray:
        """bool [K]: the blocks a non-key frame runs under the budget (the generator's choice without one)."""
        keep = np.asarray(masks["keep"]).astype(bool).reshape(-1)
        if self.keep_threshold is None and self.max_blocks is None:
            return keep
        probability = np.asarray(masks["keep_probability"], dtype=np.float32).reshape(-1)
        if self.keep_threshold is not None:
            keep = probability > self.keep_threshold
        if self.max_blocks is not None and keep.sum() > self.max_blocks:
            ranked = np.argsort(-np.where(keep, probability, -np.inf), kind="stable")
            keep = np.zeros_like(keep)
            keep[ranked[:self.max_blocks]] = True
        return keep

    def signals(self, image, needed: tuple[str, ...], run) -> dict:
        """Run the mask generator (every frame: its encoding is the next frame's t)."""
        prev = self.encoding if self.encoding is not None else self.empty_encoding
        budgeted = self.keep_threshold is not None or self.max_blocks is not None
        out = run("mask", {"image": image, "prev_encoding": prev},
                  ("keep", "distortion") + (("keep_probability",) if budgeted else ()))
        self.encoding = out["encoding"]
        self.masks = out
        return {"distortion": float(np.asarray(out["distortion"]).reshape(-1)[0])}

    def step(self, image, is_key: bool, run):
        """Process one uint8 [1,H,W,3] frame (after signals()); returns uint8 labels [1,H,W]."""
        if is_key:
            out = run("keyframe", {"image": image}, self.label_outputs())
        else:
            keep = self.keep_override if self.keep_override is not None else self.budget_keep(self.masks)
            self.last_keep = keep
            self.kept_blocks += int(np.count_nonzero(keep))
            self.non_key_frames += 1
            partial = run("partial", {"image": image, "keep": keep}, ())
            out = run("aggregation", {"current_features": partial["features"], "prev_features": self.features,
                                      "spatial_mask": self.masks["spatial_mask"]}, self.label_outputs())
        self.features = out["features"]
        return self.labels_of(out)
