"""TDNet: TD4-PSP18 / TD2-PSP50 with the official state_dict layout, split per path.

Frame i runs path p = i % num_paths. Per frame (official forward_path{p+1}):

    z = features(p, x)                        # [1, C, h, w]
    q_cur, v_cur = encode_current(p, z)       # [1, P, 64], [1, 512, h, w]
    v = v_cur if fewer than queue_length frames were seen, else
        v_cur + propagate(p, *stored, q_cur, z.shape)
    logits = head(p, v)                       # [1, num_classes, h, w]
    push encode_stored(p, z) = (q, k, v) onto the FIFO of the last queue_length frames

`stored` is the FIFO flattened oldest first, without the oldest frame's q (the official
code never reads it): TD4 (queue 3): k0, v0, q1, k1, v1, q2, k2, v2; TD2 (queue 1): k0, v0.
Each stored tensor is [1, Ps, d] (Ps = ceil(h/4) * ceil(w/4)). x is float32
[1, 3, H, W] RGB, (x / 255 - ImageNet mean) / std; h, w = cfg.feature_size (97x193 at
769x1537). The official output is the logits resized bilinearly (align_corners=True)
to H x W.

Attribute names are the official ones (pretrained1, psp1, enc1, atn1_2 / atn1,
layer_norm1.ln, head1.conv5, ...): `TDNet(cfg).state_dict()` has exactly the keys and
shapes of the official model when cfg is 769x1537.

LayerNorm size: the official LayerNorm([97, 193]) normalises over (h, w) with a
per-position weight and bias, so it is tied to 769x1537. For another size the model
is built with LayerNorm(cfg.feature_size), and `resize_layer_norms` maps official
weights onto it by bilinear interpolation with align_corners=True (the author's
advice in feinanshan/TDNet issues #11 and #55 is to resize these weights; corner
alignment matches the features' geometry: with the padded stride-2 steps feature
pixel i sits on image pixel 8 i, so the first and last rows/columns stay on the
image borders at any size).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_edge.configs import TDNetConfig
from vss_edge.models.tdnet.modules import Attention, Encoding, FCNHead, PyramidPooling, SpatialLayerNorm
from vss_edge.models.tdnet.resnet import resnet18, resnet50

D_K = 64  # query/key width
D_V = 512  # value width (both variants)

# Per path (0-based), the Attention modules chained oldest stored frame first, as the
# official forward_path{p+1} uses them.
ATTENTION_CHAINS = {
    "td4_psp18": (("atn1_2", "atn1_3", "atn1_4"), ("atn2_3", "atn2_4", "atn2_1"),
                  ("atn3_4", "atn3_1", "atn3_2"), ("atn4_1", "atn4_2", "atn4_3")),
    "td2_psp50": (("atn1",), ("atn2",)),
}


class TDNet(nn.Module):
    """All paths of one TDNet variant; see the module docstring for the per-frame contract."""

    def __init__(self, cfg: TDNetConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.num_paths
        td4 = cfg.variant == "td4_psp18"
        backbone = resnet18 if td4 else resnet50
        scale = cfg.backbone_width / 64  # 1 for the official models; the small configuration's narrower
        channels = int((512 if td4 else 2048) * scale)
        d_k, d_v = D_K, int(D_V * scale)  # queries/keys keep the official 64 (and the temperature sqrt(64))
        # TD4's pyramid pooling splits channels in halves (path_num // 2 = 2, pid 0,1,0,1).
        psp_split = 2
        for p in range(n):
            setattr(self, f"pretrained{p + 1}", backbone(cfg.backbone_width))
        for p in range(n):
            setattr(self, f"psp{p + 1}", PyramidPooling(channels, path_num=psp_split, pid=p % psp_split))
        for p in range(n):
            setattr(self, f"enc{p + 1}", Encoding(channels, d_k, d_v))
        for name in sorted({a for chain in ATTENTION_CHAINS[cfg.variant] for a in chain}):
            setattr(self, name, Attention(d_v, d_k))
        for p in range(n):
            setattr(self, f"layer_norm{p + 1}", SpatialLayerNorm(cfg.feature_size))
        for p in range(n):
            setattr(self, f"head{p + 1}", FCNHead(d_v, cfg.num_classes, chn_down=4 if td4 else 2))

    def _path(self, kind: str, p: int) -> nn.Module:
        if not 0 <= p < self.cfg.num_paths:
            raise IndexError(f"path index must be in 0..{self.cfg.num_paths - 1}, got {p}")
        return getattr(self, f"{kind}{p + 1}")

    def attention_chain(self, p: int) -> tuple[str, ...]:
        """Names of the Attention modules path p applies, oldest stored frame first."""
        self._path("enc", p)
        return ATTENTION_CHAINS[self.cfg.variant][p]

    def features(self, p: int, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB [1, 3, H, W] -> z = psp_p(pretrained_p(x)) [1, C, h, w]."""
        return self._path("psp", p)(self._path("pretrained", p)(x))

    def encode_current(self, p: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> (q [1, h*w, 64], v [1, 512, h, w]): official enc_p(z, pre=False)."""
        return self._path("enc", p).current(z)

    def encode_stored(self, p: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z -> (q, k, v), each [1, hs*ws, d], of z subsampled by 4: official enc_p(z, pre=True)."""
        return self._path("enc", p).stored(z)

    def propagate(self, p: int, *args) -> torch.Tensor:
        """(p, *stored, q_cur, z_shape) -> v_prop [1, 512, h, w], to be added to v_cur.

        stored: TD4 k0, v0, q1, k1, v1, q2, k2, v2; TD2 k0, v0 (index 0 = oldest frame).
        Each step attends the next frame's q (the current q at the last step) to the
        previous frame's k and accumulated v: v <- atn(k_i, v, q_{i+1}) + v_{i+1}.
        """
        chain = self.attention_chain(p)
        expected = 3 * len(chain) - 1
        if len(args) != expected + 2:
            raise TypeError(f"{self.cfg.variant} propagate takes {expected} stored tensors, q_cur and "
                            f"z_shape; got {len(args)} arguments")
        *stored, q_cur, z_shape = args
        h, w = int(z_shape[-2]), int(z_shape[-1])
        k, v = stored[0], stored[1]
        for step, name in enumerate(chain[:-1]):
            q_next, k_next, v_next = stored[2 + 3 * step:5 + 3 * step]
            v = getattr(self, name)(k, v, q_next) + v_next
            k = k_next
        return getattr(self, chain[-1])(k, v, q_cur, size=(h, w))

    def head(self, p: int, v: torch.Tensor) -> torch.Tensor:
        """v [1, 512, h, w] -> logits [1, num_classes, h, w]: head_p(layer_norm_p(v))."""
        return self._path("head", p)(self._path("layer_norm", p)(v))


def _is_layer_norm_key(key: str) -> bool:
    return key.startswith("layer_norm") and key.endswith((".ln.weight", ".ln.bias"))


def layer_norm_size(state_dict: Mapping) -> tuple[int, int] | None:
    """The (h, w) of the LayerNorm weights in a TDNet state_dict, None if it has none."""
    for key, value in state_dict.items():
        if isinstance(key, str) and _is_layer_norm_key(key.removeprefix("module.")) and value.dim() == 2:
            return int(value.shape[0]), int(value.shape[1])
    return None


def _resized(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape) == tuple(size):
        return t.clone()
    out = F.interpolate(t.detach().float()[None, None], size=tuple(size), mode="bilinear", align_corners=True)
    return out[0, 0].to(t.dtype)


def resize_layer_norms(model_or_state_dict, feature_size: tuple[int, int]):
    """LayerNorm weights and biases resized bilinearly (align_corners=True) to feature_size.

    A state_dict (Mapping) gives a new OrderedDict, other entries shared. A module has
    each SpatialLayerNorm's `ln` replaced in place (and is returned); a TDNet's cfg is
    left as it is, so use this on a module only where the caller keeps sizes consistent.
    """
    feature_size = (int(feature_size[0]), int(feature_size[1]))
    if isinstance(model_or_state_dict, Mapping):
        return OrderedDict((k, _resized(v, feature_size) if isinstance(k, str)
                            and _is_layer_norm_key(k.removeprefix("module.")) else v)
                           for k, v in model_or_state_dict.items())
    if isinstance(model_or_state_dict, nn.Module):
        for m in model_or_state_dict.modules():
            if isinstance(m, SpatialLayerNorm):
                old = m.ln
                ln = nn.LayerNorm(list(feature_size), eps=old.eps).to(old.weight.device)
                with torch.no_grad():
                    ln.weight.copy_(_resized(old.weight, feature_size))
                    ln.bias.copy_(_resized(old.bias, feature_size))
                m.ln = ln
        return model_or_state_dict
    raise TypeError(f"expected a state_dict or an nn.Module, got {type(model_or_state_dict).__name__}")
