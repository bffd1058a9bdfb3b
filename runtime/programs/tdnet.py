"""TDNet's algorithm over its per-path graphs (paper Sec. 3.2-3.3; official Testing code).

Frame t runs one sub-network path p (chosen by a path scheduler, round robin by
default): graph `path{p}` takes the frame and the stored (q, k, v) of the previous
L frames (L = 3 for TD4, 1 for TD2; inputs k0, v0, q1, k1, v1, ... oldest first,
the oldest frame's q is never used) and returns the labels and this frame's
(q, k, v), subsampled by 4, for the frames after it. Until L frames are stored,
`history` is 0 and the graph uses only the current frame's values, as the official
code does. L is read off the graphs' inputs.
"""
from __future__ import annotations

import numpy as np

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.programs.base import Program, register_program


@register_program("tdnet")
class TDNetProgram(Program):
    """No key frames: the scheduler picks a path per frame, and there is no scheduler signal."""

    scheduler_needs = "path"

    def __init__(self, manifest):
        super().__init__(manifest)
        paths = sorted(n for n, g in manifest.graphs.items() if g.role == "path_net")
        self.graphs = tuple(f"path{i}" for i in range(len(paths)))
        if not paths or sorted(self.graphs) != paths:
            raise BundleError(f"bundle '{manifest.root}': TDNet graphs must be path0..pathN-1, got {paths}")
        state = {t.name: t for t in manifest.state}
        missing = {"q", "k", "v"} - set(state)
        if missing:
            raise BundleError(f"bundle '{manifest.root}': TDNet state lacks {sorted(missing)}")
        self.empty = {n: np.zeros(state[n].shape, dtype=np.float32) for n in ("q", "k", "v")}
        self.length = sum(t.name.startswith("k") for t in manifest.graphs[self.graphs[0]].inputs)
        stored = ["k0", "v0"] + [f"{n}{i}" for i in range(1, self.length) for n in ("q", "k", "v")]
        self.uses = {g: GraphUse("path_net", ("image", "history", *stored), ("labels", "q", "k", "v")) for g in self.graphs}
        self.flags = {True: np.ones((1,), np.float32), False: np.zeros((1,), np.float32)}
        self.history: list[dict] = []

    def reset_state(self) -> None:
        self.history = []

    @property
    def has_state(self) -> bool:
        return bool(self.history)

    def signals(self, image, needed: tuple[str, ...], run) -> dict:
        """TDNet has no key frames, so no scheduler signal."""
        return {}

    def decide(self, scheduler, info) -> int:
        path = int(scheduler.path(info))
        if not 0 <= path < len(self.graphs):
            raise VssEdgeError(f"scheduler chose path {path}; this bundle has paths 0..{len(self.graphs) - 1}")
        return path

    def step(self, image, path: int, run):
        """Run graph path{path} on a uint8 [1,H,W,3] frame; returns uint8 labels [1,H,W]."""
        full = len(self.history) == self.length
        entries = self.history if full else [self.empty] * self.length
        feeds = {"image": image, "history": self.flags[full]}
        for i, entry in enumerate(entries):
            for n in ("k", "v") if i == 0 else ("q", "k", "v"):
                feeds[f"{n}{i}"] = entry[n]
        out = run(self.graphs[path], feeds, self.label_outputs())
        self.history = (self.history + [{n: out[n] for n in ("q", "k", "v")}])[-self.length:]
        return self.labels_of(out)
