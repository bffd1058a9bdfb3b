"""STMG (Rhee et al., NeurIPS 2022) on DDRNet: backbone, mask generator, graphs."""
