"""Training of the demo checkpoints on CPU (needs torch; never imported by `import vss_edge`).

    python -m vss_edge.training gsvnet --out vss_edge/data/weights
    python -m vss_edge.training stmg --out vss_edge/data/weights
    python -m vss_edge.training tdnet --out vss_edge/data/weights
    python -m vss_edge.training mpvss --out vss_edge/data/weights

reproduce the committed small-configuration checkpoints (each module's docstring says what
each stage trains and where it departs from the paper).
`METHODS` lists what `python -m vss_edge.training` accepts; a new method adds a module
vss_edge/training/<method>.py with a `Settings` dataclass (each field becomes a --flag) and
`train(out_dir, settings, video=..., exclude=..., quiet=...) -> report` (report["checkpoints"]:
file name -> bytes, report["total_seconds"]).
"""
from pathlib import Path

METHODS = ("gsvnet", "stmg", "tdnet", "mpvss")
DEFAULT_VIDEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "vtest.avi"  # ../shared beside the clone
