"""Training of the demo checkpoints on CPU (needs torch; never imported by `import vss_edge`).

    python -m vss_edge.training gsvnet --out vss_edge/data/weights

reproduces the committed GSVNet small-configuration checkpoints (see vss_edge/training/gsvnet.py
for what each stage trains and where it departs from the paper). TDNet, STMG and MPVSS have
no trainer yet: `METHODS` lists what `python -m vss_edge.training` accepts; a new method adds
a module with `Settings` and `train(out_dir, settings, video=..., exclude=..., quiet=...)`.
"""
METHODS = ("gsvnet",)
