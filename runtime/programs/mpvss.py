"""MPVSS's algorithm over its graphs (Weng et al. 2023, Sec. 3.1; official mpvss.py inference).

Key frame:      keyframe(image) -> labels, class_logits, mask_logits, queries, key_image
                (kept: the official self.mem)
Non-key frame:  flow(image, key_image, key_queries) -> N flow maps (current -> key frame)
                propagation(key_mask_logits, key_class_logits, flow) -> labels
                Always from the last key frame, never from the previous frame.
Baselines (bundle config 'propagation'): 'optical_flow' runs the same two graphs with one
pixel-wise flow for every mask; 'copy' has only the keyframe graph and repeats the key
frame's labels.
"""
from __future__ import annotations

from vss_edge.runtime.errors import BundleError
from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.programs.base import Program, register_program

PROPAGATIONS = ("query_flow", "optical_flow", "copy")


@register_program("mpvss")
class MPVSSProgram(Program):
    """MPVSS has no distortion of its own: the runtime's frame difference stands in (the base's)."""

    label_scores = ("mask_logits",)  # host labels: with the key frame's class_logits

    def __init__(self, manifest):
        super().__init__(manifest)
        self.propagation = manifest.config.get("propagation", "query_flow")
        if self.propagation not in PROPAGATIONS:
            raise BundleError(f"bundle '{manifest.root}': MPVSS propagation must be one of "
                              f"{', '.join(PROPAGATIONS)}, got {self.propagation!r}")
        self.graphs = ("keyframe",) if self.propagation == "copy" else ("keyframe", "flow", "propagation")
        if self.propagation != "copy":
            needed = {"class_logits", "mask_logits", "queries", "key_image"}
        else:  # the key frame's labels, or what the host computes them from
            needed = {"labels"} if self.label_tail is None else {"class_logits", "mask_logits"}
        missing = needed - {t.name for t in manifest.state}
        if missing:
            raise BundleError(f"bundle '{manifest.root}': MPVSS ({self.propagation}) state lacks {sorted(missing)}")
        flow = manifest.graphs.get("flow")
        self.flow_reads_queries = flow is not None and any(t.name == "key_queries" for t in flow.inputs)
        key_outputs = (("labels", "class_logits") if self.propagation == "copy"
                       else ("labels", "class_logits", "mask_logits", "queries", "key_image"))
        self.uses = {  # what step() feeds each graph and reads back (checked at load)
            "keyframe": GraphUse("keyframe_net", ("image",), key_outputs),
            "flow": GraphUse("flow_net", ("image", "key_image") + (("key_queries",) if self.propagation == "query_flow"
                                                                   else ()), ("flow",)),
            "propagation": GraphUse("propagation_head", ("key_mask_logits", "key_class_logits", "flow"), ("labels",)),
        }
        if self.propagation == "copy":
            del self.uses["flow"], self.uses["propagation"]
        self.key: dict | None = None

    def reset_state(self) -> None:
        self.key = None
        self.key_labels = None  # uint8 [1, Hl, Wl] of the last key frame

    @property
    def has_state(self) -> bool:
        return self.key is not None

    def step(self, image, is_key: bool, run):
        """Process one uint8 [1,H,W,3] frame; returns uint8 labels [1,Hl,Wl] on the host."""
        if is_key:
            self.key = run("keyframe", {"image": image}, self.label_outputs() + ("class_logits",))
            self.key_labels = self.labels_of(self.key, self.key)
            return self.key_labels
        if self.propagation == "copy":
            shape = self.host_label_shape()
            if shape is not None and self.key_labels.shape[-2:] != shape:  # a frame of another size
                self.key_labels = self.labels_of(self.key, self.key)
            return self.key_labels
        key = self.key
        feeds = {"image": image, "key_image": key["key_image"]}
        if self.flow_reads_queries:  # the query-based flow (the optical-flow baseline reads none)
            feeds["key_queries"] = key["queries"]
        flow = run("flow", feeds, ())
        out = run("propagation", {"key_mask_logits": key["mask_logits"], "key_class_logits": key["class_logits"],
                                  "flow": flow["flow"]}, self.label_outputs())
        return self.labels_of(out, key)

    def labels_of(self, outputs: dict, key: dict):
        """uint8 labels [1, Hl, Wl]: the graph's, or the host's semantic inference from the key
        frame's class logits and this frame's (warped) mask logits (runtime.labels.MaskLabels)."""
        if self.label_tail is None:
            return outputs["labels"]
        return self.label_tail(key["class_logits"], outputs["mask_logits"], self.label_size)[None]

    def host_label_shape(self) -> tuple[int, int] | None:
        """(height, width) of the labels the host computes now: label_size when set, else the
        bundle's label size; None when the graphs output the labels."""
        if self.label_tail is None:
            return None
        return tuple(self.label_size) if self.label_size is not None else self.label_tail.size
