"""MPVSS (Weng et al., NeurIPS 2023): Mask2Former key frames, query-based flow mask propagation."""
