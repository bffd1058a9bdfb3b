"""The Program contract every method's runtime program follows, and the runtime's registry of them.

A program is a method's algorithm over its graphs: which graphs run on a key frame and on the
other frames, and what state moves between frames. The Pipeline calls, for each frame:

    signals = program.signals(image, needed, run)   # before the decision (STMG's mask generator)
    decision = program.decide(scheduler, info)       # key or not (a path index for TDNet)
    labels = program.step(image, decision, run)      # uint8 [1, Hl, Wl] on the host

Before each step the Pipeline sets `program.label_size` to the frame's (height, width): labels the
host computes come at that size directly (the nearest-neighbour resize of the [Hl, Wl] labels,
computed at the pixels it keeps only); labels from the graphs stay [Hl, Wl] and the Pipeline
resizes them. A program that ignores label_size is correct too, only slower.

`run(graph, feeds, host_outputs) -> outputs` runs one graph; outputs not named in host_outputs
may stay on the device. A program replaces its state values each frame (never mutates them in
place): that is what makes Pipeline.step all-or-nothing.

Registering (as timm's @register_model): `@register_program("name")` on the class; `program_for`
finds it by the bundle manifest's method. A new method's program is one file in this folder,
imported by `vss_edge.runtime.programs`, or any module imported before `load()` (tests register
toy methods that way).
"""
from __future__ import annotations

from vss_edge.runtime.errors import BundleError, VssEdgeError
from vss_edge.runtime.labels import label_tail
from vss_edge.runtime.manifest import GraphUse
from vss_edge.runtime.signals import FrameDifference

PROGRAMS: dict[str, type[Program]] = {}


def register_program(method: str):
    """Class decorator: the runtime program of bundles whose manifest says `method`."""

    def register(cls: type[Program]) -> type[Program]:
        if method in PROGRAMS and PROGRAMS[method] is not cls:
            raise ValueError(f"a program for method '{method}' is already registered ({PROGRAMS[method].__name__})")
        cls.method = method
        PROGRAMS[method] = cls
        return cls

    return register


def program_for(method: str) -> type[Program]:
    """The Program class for a bundle's method; BundleError if this runtime has none."""
    if method not in PROGRAMS:
        raise BundleError(f"no runtime program for method '{method}' (known: {', '.join(sorted(PROGRAMS))})")
    return PROGRAMS[method]


class Program:
    """Base of the per-method programs.

    Class (or instance) attributes a program sets:
      graphs: the bundle graphs it needs, by name.
      uses: graph name -> GraphUse(role, inputs it feeds, outputs it reads); load() checks the
        bundle against it (manifest.check_program_fit).
      scheduler_needs: the scheduler method it calls: 'is_key' (key-frame methods) or 'path' (TDNet).
      budget_options: the compute-budget knobs `set_budget` takes (STMG: keep_threshold,
        max_blocks), settable at load without re-exporting; none by default.
      label_scores: the outputs labels are computed from on the host when the bundle's graphs
        have no label tail (manifest "labels": computed "host"); `label_outputs()` and
        `labels_of(outputs)` read the one or the other.
      label_size: (height, width) the host's labels are wanted at (the Pipeline sets it to each
        frame's size), or None: the bundle's label resolution.
    What the base gives: a key-frame `decide` (a key frame whenever there is no state yet, else
    the scheduler's answer) and the runtime's frame difference as the 'distortion' signal
    (runtime.signals) for methods without a signal of their own.
    """

    method: str = ""
    graphs: tuple[str, ...] = ()
    uses: dict[str, GraphUse] = {}
    scheduler_needs = "is_key"
    label_scores: tuple[str, ...] = ("logits",)
    budget_options: tuple[str, ...] = ()
    label_size: tuple[int, int] | None = None

    def __init__(self, manifest):
        self.manifest = manifest
        self.frame_difference = FrameDifference()
        self.label_tail = label_tail(manifest.labels)  # None: the graphs output "labels"

    def label_outputs(self) -> tuple[str, ...]:
        """The outputs a labelling graph run must bring to the host: its labels, or their scores."""
        return ("labels",) if self.label_tail is None else self.label_scores

    def labels_of(self, outputs: dict):
        """uint8 labels [1, Hl, Wl] of a graph run: the graph's own, or the host's from its logits
        (then at label_size when it is set)."""
        if self.label_tail is None:
            return outputs["labels"]
        return self.label_tail(outputs["logits"], self.label_size)[None]

    def set_budget(self, **options) -> None:
        """Trade accuracy for speed at run time (runtime.load(budget=...), the CLI's budget flags).

        VssEdgeError for an option this method does not have; a program with options overrides
        this, calls it first and then checks and keeps the values.
        """
        unknown = sorted(set(options) - set(self.budget_options))
        if unknown:
            takes = f"takes only {', '.join(self.budget_options)}" if self.budget_options else "has none"
            raise VssEdgeError(f"method '{self.method}' has no compute budget option {', '.join(unknown)} "
                               f"(it {takes})")

    def budget_report(self) -> dict:
        """The budget in force and what it did so far (the run summary's compute_budget)."""
        return {}

    def reset(self) -> None:
        """Forget the state carried between frames (a new sequence starts)."""
        self.frame_difference.reset()
        self.reset_state()

    def reset_state(self) -> None:
        raise NotImplementedError

    @property
    def has_state(self) -> bool:
        """Whether a previous frame left state to propagate from."""
        raise NotImplementedError

    def signals(self, image, needed: tuple[str, ...], run) -> dict:
        """Scheduler signals computed before the decision; by default only 'distortion', the
        frame difference, when the scheduler asks for it."""
        return {"distortion": self.frame_difference(image)} if "distortion" in needed else {}

    def decide(self, scheduler, info):
        """True for a key frame: always without state, else as the scheduler says."""
        return not self.has_state or bool(scheduler.is_key(info))

    def step(self, image, decision, run):
        """Process one uint8 [1, H, W, 3] frame; returns uint8 labels [1, Hl, Wl] on the host."""
        raise NotImplementedError
