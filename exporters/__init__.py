"""PyTorch -> ONNX exporters: one module per method, plus the shared export step (needs torch)."""
