"""Mask2Former's MSDeformAttn pixel decoder, written in plain exportable ops.

Multi-scale deformable attention uses the grid_sample formulation (Deformable DETR's
pure-PyTorch path, `ms_deform_attn_core_pytorch`: bilinear, zeros padding,
align_corners=False), so the graph is GridSample + MatMul, no custom kernel. Spatial
shapes, level start indices and reference points are Python constants of the static
input size (they become constants of the graph).

state_dict keys as the official MSDeformAttnPixelDecoder: input_proj.{l}.{0: conv, 1: GN},
transformer.level_embed, transformer.encoder.layers.{i}.{self_attn.{sampling_offsets,
attention_weights, value_proj, output_proj}, norm1, linear1, linear2, norm2},
mask_features, adapter_1.{weight, norm.*}, layer_1.{weight, norm.*}.
Padding masks are all False in the official code (it never masks the padded border), so
there are none here either; valid ratios are 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.mpvss.resnet import NormConv2d


def position_embedding_sine(x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine position embedding of x's [H, W] grid (no mask) -> [1, 2*F, H, W].

    A function of the static shape only: computed once at trace time (a constant of the graph).
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    eps, scale = 1e-6, 2 * math.pi
    y_embed = torch.arange(1, h + 1, dtype=torch.float32).view(1, h, 1).expand(1, h, w)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32).view(1, 1, w).expand(1, h, w)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)


def ms_deform_attn_core(value: torch.Tensor, shapes: list[tuple[int, int]], sampling_locations: torch.Tensor,
                        attention_weights: torch.Tensor) -> torch.Tensor:
    """value [B, S, M, D], sampling_locations [B, Lq, M, L, P, 2] in [0, 1], attention_weights
    [B, Lq, M, L, P] -> [B, Lq, M*D]. One GridSample per level."""
    b, _, m, d = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [B*M, Lq, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(b, m * d, lq)
    return out.transpose(1, 2)


class MSDeformAttn(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int = 4):
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        """Deformable DETR's init (offsets start on a ring of directions, one per head)."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query, reference_points, value_in, shapes: list[tuple[int, int]]):
        b, lq, _ = query.shape
        m, lv, p = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_in).view(b, value_in.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(b, lq, m, lv, p, 2)
        weights = F.softmax(self.attention_weights(query).view(b, lq, m, lv * p), -1).view(b, lq, m, lv, p)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype)  # (W, H) per level
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(value, shapes, locations, weights))


class EncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN (ReLU), dropout off (eval)."""

    def __init__(self, d_model, d_ffn, n_levels, n_heads, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class Encoder(nn.Module):
    def __init__(self, layer_args: tuple, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(num_layers))

    @staticmethod
    def reference_points(shapes: list[tuple[int, int]]) -> torch.Tensor:
        """[1, S, L, 2] pixel centres normalised to [0, 1] (valid ratios 1: no padding mask)."""
        refs = []
        for h, w in shapes:
            ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w),
                                          indexing="ij")
            refs.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
        ref = torch.cat(refs, 0)[None]
        return ref[:, :, None].expand(1, ref.shape[1], len(shapes), 2)

    def forward(self, src, shapes, pos):
        ref = self.reference_points(shapes).to(src.dtype)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        return src


class DeformableTransformerEncoder(nn.Module):
    """Official MSDeformAttnTransformerEncoderOnly (keys: level_embed, encoder.layers.*)."""

    def __init__(self, d_model, nhead, num_layers, d_ffn, n_levels, n_points=4):
        super().__init__()
        self.encoder = Encoder((d_model, d_ffn, n_levels, nhead, n_points), num_layers)
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                         for i, p in enumerate(pos_embeds)], 1)
        return self.encoder(src, shapes, pos), shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """features {'res2'..'res5'} -> (mask_features [1, D, H/4, W/4], multi-scale features at
    1/32, 1/16, 1/8 [1, C, h, w] each). Deformable encoder over res3..res5, one FPN level (res2)."""

    def __init__(self, in_channels: dict[str, int], conv_dim: int, mask_dim: int, nheads: int,
                 enc_layers: int, enc_ffn: int):
        super().__init__()
        self.transformer_in_features = ["res3", "res4", "res5"]
        self.input_proj = nn.ModuleList()
        for name in self.transformer_in_features[::-1]:  # res5 first (low to high resolution)
            proj = nn.Sequential(nn.Conv2d(in_channels[name], conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
            self.input_proj.append(proj)
        self.transformer = DeformableTransformerEncoder(conv_dim, nheads, enc_layers, enc_ffn, n_levels=3)
        self.conv_dim = conv_dim
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        # one extra FPN level: log2(min transformer stride 8) - log2(common stride 4) = 1
        self.adapter_1 = NormConv2d(in_channels["res2"], conv_dim, 1, norm=nn.GroupNorm(32, conv_dim))
        self.layer_1 = NormConv2d(conv_dim, conv_dim, 3, padding=1, norm=nn.GroupNorm(32, conv_dim), relu=True)
        for conv in (self.mask_features, self.adapter_1, self.layer_1):  # c2_xavier_fill
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.constant_(conv.bias, 0)

    def forward(self, features: dict[str, torch.Tensor]):
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pos.append(position_embedding_sine(x, self.conv_dim // 2))
        y, shapes = self.transformer(srcs, pos)
        b = y.shape[0]
        out = [z.transpose(1, 2).reshape(b, self.conv_dim, h, w)
               for z, (h, w) in zip(y.split([h * w for h, w in shapes], dim=1), shapes)]
        cur = self.adapter_1(features["res2"])
        # bilinear, align_corners=False (the official code, despite its "nearest" comment)
        y = self.layer_1(cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False))
        out.append(y)
        return self.mask_features(out[-1]), out[:3]
