"""MPVSS's query-based flow module (official mask2former/modeling/motion/*) and the
paper's optical-flow baseline, plus the mask warp.

Motion encoder (MotionEnc): FlowNetS's encoder on cat(current, key) (6 channels) at half
resolution: conv1 7x7 s2, conv2 5x5 s2, conv3 5x5 s2 + 3x3, conv4..conv6 3x3 s2 + 3x3,
LeakyReLU 0.1, bias; outputs conv2..conv6 (1/8 .. 1/128 of the padded frame).
Motion decoder (MotionDec): flow queries initialised from the key frame's queries; 9 layers
(S=3 stages x L=3 blocks) cycling over conv6, conv5, conv4 projected to C channels, each a
joint self-attention over [queries + query_embed; level + sine position] and an FFN
(Eq. 1-3), the level's tokens updated in place. The refined levels replace conv4..conv6 and
a FlowNetS refinement (deconv + predict_flow + upsample_flow, coarse to fine) gives the
pixel-wise flow at the conv2 level. Flow head: per-query flow = MLP(decoder_norm(query)) .
MLP(conv2) (2C channels; x from the second C channels, y from the first, as the code),
fused with the pixel-wise flow by a 3x3 conv (4 -> 2): [N, 2, H/8, W/8].
state_dict keys as the official modules (mmcv ConvModule: <name>.conv.weight).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.mpvss.pixel_decoder import position_embedding_sine
from vss_edge.models.mpvss.transformer_decoder import MLP, FFNLayer, SelfAttentionLayer
from vss_edge.models.sampling import bilinear_sample


class ConvModule(nn.Module):
    """mmcv ConvModule without norm: conv (or transposed conv) + optional LeakyReLU(0.1)."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, bias=True, act=True, deconv=False):
        super().__init__()
        conv = nn.ConvTranspose2d if deconv else nn.Conv2d
        self.conv = conv(cin, cout, kernel_size, stride=stride, padding=padding, bias=bias)
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        return F.leaky_relu(x, 0.1) if self.act else x


class MotionEncoder(nn.Module):
    """6-channel image pair -> [conv2, conv3, conv4, conv5, conv6] (official out_indices 2..6)."""

    KERNELS = (7, 5, 5, 3, 3, 3)
    NUM_CONVS = (1, 1, 2, 2, 2, 2)

    def __init__(self, planes: tuple[int, ...]):
        super().__init__()
        cin = 6
        self.names = []
        for i, (cout, k, n) in enumerate(zip(planes, self.KERNELS, self.NUM_CONVS)):
            layers = nn.ModuleList([ConvModule(cin, cout, k, stride=2, padding=(k - 1) // 2)])
            for _ in range(1, n):
                k2 = 3 if i == 2 else k
                layers.append(ConvModule(cout, cout, k2, stride=1, padding=(k2 - 1) // 2))
            self.add_module(f"conv{i + 1}", layers)
            self.names.append(f"conv{i + 1}")
            cin = cout

    def forward(self, x):
        outs = []
        for i, name in enumerate(self.names, start=1):
            for layer in getattr(self, name):
                x = layer(x)
            if i >= 2:
                outs.append(x)
        return outs


def _crop_like(x, target):
    return x[:, :, :target.shape[2], :target.shape[3]]


def add_refinement(module: nn.Module, level_channels: tuple[int, ...], deconv_planes: tuple[int, ...]) -> None:
    """Add FlowNetS's coarse-to-fine decoder to `module` (official names, directly on it):
    deconv5, predict_flow6, upsample_flow5, deconv4, ..., upsample_flow2, predict_flow.

    level_channels: channels of levels l2..l6; deconv_planes: outputs of deconv2..deconv5.
    The concatenations' widths follow (MPVSS: 386, 386, 386 and 194; FlowNetS: 1026, 770, 386, 194).
    """
    concat = {6: level_channels[4]}
    for lvl in (5, 4, 3, 2):
        concat[lvl] = level_channels[lvl - 2] + deconv_planes[lvl - 2] + 2
    for lvl in (5, 4, 3, 2):  # deconv{lvl} reads concat[lvl + 1]
        module.add_module(f"deconv{lvl}", ConvModule(concat[lvl + 1], deconv_planes[lvl - 2], 4, 2, 1,
                                                     bias=False, deconv=True))
        module.add_module(f"predict_flow{lvl + 1}", ConvModule(concat[lvl + 1], 2, 3, 1, 1, bias=False, act=False))
        module.add_module(f"upsample_flow{lvl}", ConvModule(2, 2, 4, 2, 1, bias=False, act=False, deconv=True))
    module.add_module("predict_flow", ConvModule(concat[2], 2, 3, 1, 1, bias=False, act=False))


def refine(module: nn.Module, levels: list[torch.Tensor]) -> torch.Tensor:
    """The decoder add_refinement built, over levels [l2, l3, l4, l5, l6] -> flow [B, 2, h2, w2]
    (the official crop_like crops each upsampled map to the finer level's size)."""
    out = levels[4]
    for lvl in (5, 4, 3, 2):
        flow = getattr(module, f"predict_flow{lvl + 1}")(out)
        target = levels[lvl - 2]
        upflow = _crop_like(getattr(module, f"upsample_flow{lvl}")(flow), target)
        deconv = _crop_like(getattr(module, f"deconv{lvl}")(out), target)
        out = torch.cat((target, deconv, upflow), dim=1)
    return module.predict_flow(out)


class FlowRefinement(nn.Module):
    """FlowNetS's decoder as a module of its own (the optical-flow baseline)."""

    def __init__(self, level_channels: tuple[int, ...], deconv_planes: tuple[int, ...]):
        super().__init__()
        add_refinement(self, level_channels, deconv_planes)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return refine(self, levels)


class MotionDecoder(nn.Module):
    """(encoder levels, key queries [N, B, C]) -> N flow maps [B*N, 2, h, w] at the conv2 level."""

    def __init__(self, planes: tuple[int, ...], deconv_planes: tuple[int, ...], hidden_dim: int, num_queries: int,
                 nheads: int, dim_feedforward: int, dec_layers: int, flow_scale_factor: float = 1.0):
        super().__init__()
        c = hidden_dim
        self.hidden_dim, self.num_queries, self.num_layers = c, num_queries, dec_layers
        self.flow_scale_factor = flow_scale_factor  # config.py MOTION.FLOW_SCALE_FACTOR
        # levels 4..6 are replaced by their refined C-channel tokens before the refinement
        add_refinement(self, (planes[1], planes[2], c, c, c), deconv_planes)
        self.transformer_self_attention_layers = nn.ModuleList(SelfAttentionLayer(c, nheads) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(c, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(c)
        self.output_head = MLP(c, 2 * c, c, 3)
        self.scale_layer = MLP(planes[1], 2 * c, 2 * c, 3)
        self.query_embed = nn.Embedding(num_queries, c)
        self.fuse_layer = ConvModule(4, 2, 3, 1, 1, bias=True, act=False)
        nn.init.constant_(self.fuse_layer.conv.weight, 0)  # official init: the fused flow starts at 1
        nn.init.constant_(self.fuse_layer.conv.bias, 1)
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, c)
        self.input_proj = nn.ModuleList()
        for cin in (planes[5], planes[4], planes[3]):  # conv6, conv5, conv4
            if cin != c:
                proj = nn.Conv2d(cin, c, kernel_size=1)
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.constant_(proj.bias, 0)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

    def forward(self, levels: list[torch.Tensor], query_init: torch.Tensor) -> torch.Tensor:
        c2 = levels[0]
        query_x = [levels[4], levels[3], levels[2]]  # conv6, conv5, conv4
        motion_map = self.scale_layer(c2.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, 2C, h, w]
        src, pos, sizes = [], [], []
        for i, x in enumerate(query_x):
            sizes.append((int(x.shape[-2]), int(x.shape[-1])))
            pos.append(position_embedding_sine(x, self.hidden_dim // 2).flatten(2).permute(2, 0, 1))
            src.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        b = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
        query = query_init
        n = self.num_queries
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            out = torch.cat([query + query_embed, src[lvl] + pos[lvl]], dim=0)
            out = self.transformer_ffn_layers[i](self.transformer_self_attention_layers[i](out))
            query, src[lvl] = out[:n], out[n:]
        refined = [s.permute(1, 2, 0).reshape(b, self.hidden_dim, h, w) for s, (h, w) in zip(src, sizes)]
        flow = refine(self, [levels[0], levels[1], refined[2], refined[1], refined[0]])
        if self.flow_scale_factor != 1.0:
            flow = flow * self.flow_scale_factor
        query = self.output_head(self.decoder_norm(query)).transpose(0, 1)  # [B, N, C]
        _, _, h, w = motion_map.shape
        c = self.hidden_dim
        mx = torch.bmm(query, motion_map[:, c:].flatten(2)).reshape(b * n, 1, h, w)
        my = torch.bmm(query, motion_map[:, :c].flatten(2)).reshape(b * n, 1, h, w)
        flow = flow.unsqueeze(1).expand(b, n, 2, h, w).reshape(b * n, 2, h, w)
        return self.fuse_layer(torch.cat([flow, mx, my], dim=1))


class QueryFlowEstimator(nn.Module):
    """Official FlowEstimator: encoder + query-based motion decoder (keys motion.encoder.*, motion.decoder.*)."""

    def __init__(self, arch: dict, num_queries: int):
        super().__init__()
        self.encoder = MotionEncoder(arch["motion_planes"])
        self.decoder = MotionDecoder(arch["motion_planes"], arch["deconv_planes"], arch["hidden_dim"], num_queries,
                                     arch["nheads"], arch["motion_ffn"], arch["motion_layers"])

    def forward(self, pair: torch.Tensor, query_init: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(pair), query_init)


class OpticalFlowEstimator(nn.Module):
    """The paper's 'Optical flow' baseline (Table 3a): one pixel-wise FlowNetS flow for all
    masks. Encoder as above, FlowNetS refinement on the raw encoder levels (mmtrack
    FlowNetSimple widths: deconv 512, 256, 128, 64 x the R50 encoder; scaled with the
    variant). The paper gives no code for it: layout ours (motion.encoder.*, motion.decoder.*)."""

    def __init__(self, arch: dict):
        super().__init__()
        planes = arch["motion_planes"]
        scale = planes[1] / 128
        deconv = tuple(int(d * scale) for d in (64, 128, 256, 512))
        self.encoder = MotionEncoder(planes)
        self.decoder = FlowRefinement(tuple(planes[1:]), deconv)

    def forward(self, pair: torch.Tensor, query_init: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(pair))


def warp_masks(masks: torch.Tensor, flow: torch.Tensor, sampler: str = "gather") -> torch.Tensor:
    """Warp mask logits [1, N, H, W] with flow [N, 2, h, w] (one per mask) or [1, 2, h, w] (shared).

    As mmtrack's flow_warp_feats (official mpvss.warp_predictions): the flow is resized to
    H x W (bilinear, align_corners=False) and multiplied by W / w; the sampling grid
    (x + u, y + v) is normalised by W and H (not W-1, H-1) and sampled with grid_sample
    (bilinear, padding 'border', align_corners=True), which reads pixel (x + u) (W-1) / W.

    sampler: "gather" (what the graphs and the reference run: models.sampling, the same values to
    float rounding, faster in ONNX Runtime) or "grid_sample" (the official op, with its backward:
    what training runs).
    """
    _, n, h, w = masks.shape
    scale = float(w) / flow.shape[-1]
    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * scale
    ys, xs = torch.meshgrid(torch.arange(h, dtype=masks.dtype), torch.arange(w, dtype=masks.dtype), indexing="ij")
    if sampler == "gather":
        x = (xs[None] + flow[:, 0]) * ((w - 1) / w)
        y = (ys[None] + flow[:, 1]) * ((h - 1) / h)
        if flow.shape[0] == 1:  # one flow: the same points for every mask
            x, y = x[0], y[0]
        return bilinear_sample(masks, x, y, "border")
    if sampler != "grid_sample":
        raise ValueError(f"sampler must be 'gather' or 'grid_sample', got {sampler!r}")
    gx = (xs[None] + flow[:, 0]) / w * 2 - 1
    gy = (ys[None] + flow[:, 1]) / h * 2 - 1
    grid = torch.stack((gx, gy), dim=-1)  # [Nf, H, W, 2]
    if flow.shape[0] == 1:  # one flow: warp the N masks as channels of one image (same result)
        return F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = F.grid_sample(masks.reshape(n, 1, h, w), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(1, n, h, w)
