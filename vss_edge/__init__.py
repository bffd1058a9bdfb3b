"""vss-edge: fast video semantic segmentation as static ONNX graphs on ONNX Runtime.

    import vss_edge
    pipe = vss_edge.load("bundle/")
    labels = pipe.step(frame_bgr).labels   # uint8 HxW class indices
    multi = vss_edge.load_streams("bundle/", streams=4)   # 4 cameras on one set of sessions
    results = multi.step_all([f0, f1, f2, f3])            # one FrameResult per stream

Importing vss_edge never imports torch; exporting does.
"""
__version__ = "0.1.0"

try:
    from vss_edge.runtime import (FixedInterval, FrameInfo, FrameResult, MultiStream, Pipeline, Scheduler, VssEdgeError,
                                  load, load_streams)
except ModuleNotFoundError as e:  # a source checkout imported without installing it
    if e.name != "vss_edge.runtime":
        raise
    raise ModuleNotFoundError(
        f"vss_edge is imported from {__path__[0]}, a source checkout that is not installed: the "
        "repository's runtime/, exporters/ and calibration/ folders become vss_edge.runtime, "
        "vss_edge.exporters and vss_edge.calibration only once installed (pip install -e .)",
        name=e.name) from None

__all__ = ["load", "load_streams", "MultiStream", "Pipeline", "FrameResult", "Scheduler", "FixedInterval", "FrameInfo",
           "VssEdgeError", "__version__"]
