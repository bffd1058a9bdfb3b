"""vss-edge: fast video semantic segmentation as static ONNX graphs on ONNX Runtime.

    import vss_edge
    pipe = vss_edge.load("bundle/")
    labels = pipe.step(frame_bgr).labels   # uint8 HxW class indices

Importing vss_edge never imports torch; exporting does.
"""
__version__ = "0.1.0"

from vss_edge.runtime import FixedInterval, FrameInfo, FrameResult, Pipeline, Scheduler, VssEdgeError, load  # noqa: E402

__all__ = ["load", "Pipeline", "FrameResult", "Scheduler", "FixedInterval", "FrameInfo", "VssEdgeError",
           "__version__"]
