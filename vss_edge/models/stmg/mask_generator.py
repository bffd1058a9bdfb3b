"""STMG's spatial-temporal mask generator (paper Sec. 3.1-3.2, Eqs. 4, 7, 8, 12).

STMG has no public code; where the paper is silent the choice is ours and marked "choice".

    t = Enc_f(I_prev), e = Enc_f(I_cur)                    (Eq. 7, shared weights)
    m_sp,i = 0.5 - 0.5 cos(t_i, e_i)                        (Eq. 8, per pixel, in [0, 1])
    phi_k = clamp(gamma_k (g_k(t (+) e) [+ eta] - mu_k) / sigma_k + beta_k, tau)   (Eqs. 4, 12)
    distortion = mean_i m_sp,i                              (Algorithm 1's |m_sp|)

Eq. 4's normalisation with estimated mean/std and a learnt scale/shift is a BatchNorm
over the K block scores (eval mode at inference); tau = 1e-10. phi_k is the probability
of KEEPING block k (DBB's convention: z ~ Ber(phi) multiplies the block) - choice, the
paper's wording ("pruning probability") is ambiguous; at inference block k runs iff
phi_k > keep_threshold.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

TAU = 1e-10


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FrameEncoder(nn.Module):
    """Enc_f: normalised frame [1,3,H,W] -> features [1,C,H/8,W/8].

    Choice: three stride-2 conv-BN-ReLU (16, 32, C channels) and a linear 3x3 conv, so the
    features sit on DDRNet's stride-8 grid and the cosine can take either sign (m_sp in
    [0, 1], not only [0, 0.5] as after a ReLU).
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, 16, 2), _conv_bn_relu(16, 32, 2), _conv_bn_relu(32, channels, 2))
        self.out = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.stem(x))


class PruningHead(nn.Module):
    """H: (t (+) e) [1,2C,h,w] -> keep probabilities phi [1,K] in [tau, 1 - tau].

    g = Linear(GlobalAvgPool(ReLU(BN(Conv3x3(t (+) e))))) (choice: the paper says "another
    convolution layer" then the DBB-style normalisation); BatchNorm1d(K) is Eq. 4's
    gamma_k (g_k - mu_k) / sigma_k + beta_k.
    """

    def __init__(self, channels: int, num_blocks: int):
        super().__init__()
        self.conv = _conv_bn_relu(2 * channels, channels, 1)
        self.score = nn.Linear(channels, num_blocks)
        self.norm = nn.BatchNorm1d(num_blocks)
        nn.init.constant_(self.norm.bias, 0.5)  # choice: start undecided, phi ~ 0.5 for every block

    def forward(self, pair: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        g = self.score(self.conv(pair).mean(dim=(2, 3)))
        if bias is not None:  # Eq. 12's distortion bias eta, [1, 1]
            g = g + bias
        return torch.clamp(self.norm(g), TAU, 1.0 - TAU)


class MaskGenerator(nn.Module):
    """(t, e) encoder features of the previous and current frame -> (spatial_mask, keep_probability, distortion).

    spatial_mask: [1,1,h,w] in [0, 1], 1 where the frame changed (use the current features).
    keep_probability: [1,K]; distortion: [1], the mean of spatial_mask.
    """

    def __init__(self, channels: int, num_blocks: int, distortion_bias: bool = False):
        super().__init__()
        self.encoder = FrameEncoder(channels)
        self.pruning = PruningHead(channels, num_blocks)
        self.distortion_bias = distortion_bias

    def forward(self, t: torch.Tensor, e: torch.Tensor):
        cos = F.cosine_similarity(t, e, dim=1, eps=1e-8).unsqueeze(1)
        spatial_mask = 0.5 - 0.5 * cos
        distortion = spatial_mask.mean(dim=(1, 2, 3))
        bias = (0.5 - distortion).view(1, 1) if self.distortion_bias else None
        keep_probability = self.pruning(torch.cat([t, e], dim=1), bias)
        return spatial_mask, keep_probability, distortion


def aggregate(current: torch.Tensor, previous: torch.Tensor, spatial_mask: torch.Tensor) -> torch.Tensor:
    """Eq. 11: m_sp * pi(I_cur) + (1 - m_sp) * pi(I_prev); features [1,C,h,w], mask [1,1,h',w'].

    A mask on another grid than the features is resized bilinearly (align_corners=False).
    """
    if spatial_mask.shape[-2:] != current.shape[-2:]:
        spatial_mask = F.interpolate(spatial_mask, size=current.shape[-2:], mode="bilinear", align_corners=False)
    return spatial_mask * current + (1.0 - spatial_mask) * previous
