"""PyTorch model definitions (importing a submodule imports torch; this package does not)."""
