"""Remake the prebuilt demo bundle shipped in vss_edge/data/demo_bundle (needs the export extra).

Usage (from anywhere):
    python scripts/make_demo_bundle.py

Exports the trained GSVNet demo weights (vss_edge/data/weights) at 288x384 with the
exporter's usual checks (every graph against PyTorch on real frames) into a staged folder that
replaces the old bundle only when complete. Run it after a change to the GSVNet graphs:
tests/test_packaging.py fails while the shipped bundle's labels differ from a fresh export's.
"""
from __future__ import annotations

from vss_edge import demo_weights


def main() -> None:
    out = demo_weights.export_gsvnet_demo(demo_weights.DEMO_BUNDLE)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.2f} MB)")


if __name__ == "__main__":
    main()
