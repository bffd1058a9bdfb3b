"""Mask2Former's masked-attention transformer decoder (MultiScaleMaskedTransformerDecoder,
as MPVSS's MPVSSTransformerDecoder uses it: the same layers, also returning the queries).

Attention is written out (same parameters as nn.MultiheadAttention: in_proj_weight,
in_proj_bias, out_proj.*) so the masked attention exports as plain MatMul/Softmax/Where.
Sequence-first tensors [L, B, C] as the official code.
state_dict keys: transformer_self_attention_layers.{i}.{self_attn, norm},
transformer_cross_attention_layers.{i}.{multihead_attn, norm},
transformer_ffn_layers.{i}.{linear1, linear2, norm}, decoder_norm, query_feat, query_embed,
level_embed, class_embed, mask_embed.layers.{0,1,2} (input_proj is empty: in_channels == hidden).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.models.mpvss.pixel_decoder import position_embedding_sine


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's maths and parameter layout, sequence-first, batch 1 or more.

    attn_mask: bool [B*heads, Lq, Lk], True = may not attend (as nn.MultiheadAttention).
    """

    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.d_model, self.nhead = d_model, nhead
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query, key, value, attn_mask: torch.Tensor | None = None):
        lq, b, c = query.shape
        lk = key.shape[0]
        h, d = self.nhead, c // self.nhead
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).reshape(lq, b * h, d).transpose(0, 1)  # [B*h, Lq, d]
        k = F.linear(key, wk, bk).reshape(lk, b * h, d).transpose(0, 1)
        v = F.linear(value, wv, bv).reshape(lk, b * h, d).transpose(0, 1)
        scores = torch.bmm(q * (float(d) ** -0.5), k.transpose(1, 2))
        if attn_mask is not None:
            # a large finite value, not -inf: the same softmax in float32 (exp underflows to exactly 0;
            # every row keeps an unmasked entry), and INT8 calibration gets a finite range
            scores = scores.masked_fill(attn_mask, -1e4)
        out = torch.bmm(F.softmax(scores, dim=-1), v)  # [B*h, Lq, d]
        return self.out_proj(out.transpose(0, 1).reshape(lq, b, c))


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention (normalize_before = False, PRE_NORM: False)."""

    def __init__(self, d_model, nhead):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos=None):
        q = k = tgt if query_pos is None else tgt + query_pos
        return self.norm(tgt + self.self_attn(q, k, tgt))


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model, nhead):
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, memory_mask, pos, query_pos):
        out = self.multihead_attn(tgt + query_pos, memory + pos, memory, attn_mask=memory_mask)
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    def __init__(self, d_model, dim_feedforward):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """Linear layers with ReLU between (keys layers.{i})."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskedTransformerDecoder(nn.Module):
    """forward(multi-scale features [1/32, 1/16, 1/8], mask_features) ->
    (class logits [B, N, K+1], mask logits [B, N, H/4, W/4], queries [B, N, C]) of the last layer.

    queries are decoder_norm(output) of the last layer: what MPVSS keeps (query_out,
    mpvss_transformer_decoder.forward_output) to initialise the flow queries.
    """

    def __init__(self, num_classes, hidden_dim, num_queries, nheads, dim_feedforward, dec_layers, mask_dim):
        super().__init__()
        self.num_heads, self.num_layers, self.num_queries = nheads, dec_layers, num_queries
        self.hidden_dim = hidden_dim
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def prediction_heads(self, output, mask_features, attn_size: tuple[int, int] | None):
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # [B, N, C]
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        b, c, h, w = mask_features.shape
        outputs_mask = torch.bmm(mask_embed, mask_features.flatten(2)).view(b, -1, h, w)  # einsum bqc,bchw
        attn_mask = None
        if attn_size is not None:
            m = F.interpolate(outputs_mask, size=attn_size, mode="bilinear", align_corners=False)
            attn_mask = m.sigmoid().flatten(2) < 0.5  # [B, N, hw]
            attn_mask = attn_mask.unsqueeze(1).expand(b, self.num_heads, -1, -1).flatten(0, 1)
            # rows masked everywhere attend everywhere (official: attn_mask[where(all)] = False)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
        return outputs_class, outputs_mask, attn_mask, decoder_output

    def forward(self, x: list[torch.Tensor], mask_features: torch.Tensor):
        src, pos, sizes = [], [], []
        for i in range(self.num_feature_levels):
            sizes.append((int(x[i].shape[-2]), int(x[i].shape[-1])))
            pos.append(position_embedding_sine(x[i], self.hidden_dim // 2).flatten(2).permute(2, 0, 1))
            src.append((x[i].flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        b = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, b, 1)
        cls, masks, attn_mask, queries = self.prediction_heads(output, mask_features, sizes[0])
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](output, src[level], attn_mask, pos[level], query_embed)
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1  # the last layer's attention mask is never used
            cls, masks, attn_mask, queries = self.prediction_heads(
                output, mask_features, None if last else sizes[(i + 1) % self.num_feature_levels])
        return cls, masks, queries
