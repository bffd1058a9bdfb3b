"""GSVNet's algorithm over its three graphs (paper Sec. 3; official trainer's forward).

Key frame:      keyframe(image) -> logits, labels, image_small
Non-key frame:  flow(image, prev image_small) -> flow, image_small
                propagation(prev logits, image_small, flow) -> logits, labels
State: the last frame's refined logits and its 1/8 image; propagation is recurrent
from frame to frame, as in the official code.
"""
from __future__ import annotations

from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.signals import FrameDifference


class GSVNetProgram:
    """Program protocol: graphs, scheduler_needs, reset(), signals(image), decide(scheduler, info),
    step(image, decision, run)."""

    graphs = ("keyframe", "flow", "propagation")
    uses = {  # what step() feeds each graph and reads back (checked at load: manifest.check_program_fit)
        "keyframe": GraphUse("keyframe_net", ("image",), ("logits", "labels", "image_small")),
        "flow": GraphUse("flow_net", ("image", "prev_image_small"), ("flow", "image_small")),
        "propagation": GraphUse("propagation_head", ("prev_logits", "image_small", "flow"), ("logits", "labels")),
    }
    scheduler_needs = "is_key"  # a key-frame scheduler

    def __init__(self, manifest):
        self.manifest = manifest
        self.state: dict | None = None
        self.frame_difference = FrameDifference()

    def reset(self) -> None:
        self.state = None
        self.frame_difference.reset()

    @property
    def has_state(self) -> bool:
        return self.state is not None

    def signals(self, image, needed: tuple[str, ...], run) -> dict:
        """Scheduler signals computed before the key/non-key decision: GSVNet has no mask
        generator, so 'distortion' is the runtime's frame difference (runtime.signals)."""
        return {"distortion": self.frame_difference(image)} if "distortion" in needed else {}

    def decide(self, scheduler, info) -> bool:
        """True for a key frame: always without propagation state, else as the scheduler says."""
        return not self.has_state or bool(scheduler.is_key(info))

    def step(self, image, is_key: bool, run):
        """Process one uint8 [1,H,W,3] frame; `run(graph, feeds, host_outputs)` runs a graph.

        Returns uint8 labels [1,H,W] on the host.
        """
        if is_key:
            out = run("keyframe", {"image": image}, ("labels",))
        else:
            flow = run("flow", {"image": image, "prev_image_small": self.state["image_small"]}, ())
            out = run("propagation", {"prev_logits": self.state["logits"], "image_small": flow["image_small"],
                                      "flow": flow["flow"]}, ("labels",))
            out["image_small"] = flow["image_small"]
        self.state = {"logits": out["logits"], "image_small": out["image_small"]}
        return out["labels"]
