"""GSVNet's algorithm over its three graphs (paper Sec. 3; official trainer's forward).

Key frame:      keyframe(image) -> logits, labels, image_small
Non-key frame:  flow(image, prev image_small) -> flow, image_small
                propagation(prev logits, image_small, flow) -> logits, labels
State: the last frame's refined logits and its 1/8 image; propagation is recurrent
from frame to frame, as in the official code.
"""
from __future__ import annotations

from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.programs.base import Program, register_program


@register_program("gsvnet")
class GSVNetProgram(Program):
    """GSVNet has no mask generator: 'distortion' is the runtime's frame difference (the base's)."""

    graphs = ("keyframe", "flow", "propagation")
    uses = {  # what step() feeds each graph and reads back (checked at load: manifest.check_program_fit)
        "keyframe": GraphUse("keyframe_net", ("image",), ("logits", "labels", "image_small")),
        "flow": GraphUse("flow_net", ("image", "prev_image_small"), ("flow", "image_small")),
        "propagation": GraphUse("propagation_head", ("prev_logits", "image_small", "flow"), ("logits", "labels")),
    }

    def __init__(self, manifest):
        super().__init__(manifest)
        self.state: dict | None = None

    def reset_state(self) -> None:
        self.state = None

    @property
    def has_state(self) -> bool:
        return self.state is not None

    def step(self, image, is_key: bool, run):
        """Process one uint8 [1,H,W,3] frame; `run(graph, feeds, host_outputs)` runs a graph.

        Returns uint8 labels [1,H,W] on the host.
        """
        if is_key:
            out = run("keyframe", {"image": image}, self.label_outputs())
        else:
            flow = run("flow", {"image": image, "prev_image_small": self.state["image_small"]}, ())
            out = run("propagation", {"prev_logits": self.state["logits"], "image_small": flow["image_small"],
                                      "flow": flow["flow"]}, self.label_outputs())
            out["image_small"] = flow["image_small"]
        self.state = {"logits": out["logits"], "image_small": out["image_small"]}
        return self.labels_of(out)
