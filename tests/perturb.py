"""Test helper: move every weight of a model off its initial value, so that a checkpoint
round trip or an official-layout load is checked on weights that differ from a fresh model."""
from __future__ import annotations

import torch


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` in eval mode, every float weight and BN statistic changed (deterministic in seed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.rand(t.shape, generator=g)
            if name.endswith("running_var"):
                t.copy_(0.5 + noise)
            elif name.endswith("running_mean"):
                t.copy_(noise - 0.5)
            else:
                t.mul_(0.8 + 0.4 * noise).add_(0.01 * (noise - 0.5))
    return model.eval()
