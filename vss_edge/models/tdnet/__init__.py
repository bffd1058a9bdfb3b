"""TDNet (Hu et al., CVPR 2020) in PyTorch: temporally distributed PSPNet sub-networks.

`model.TDNet` holds all paths of TD4-PSP18 or TD2-PSP50 with the official
state_dict layout; `resnet` the dilated ResNet backbones; `modules` the pyramid
pooling, encoding, attention, head and LayerNorm blocks.
"""
from vss_edge.models.tdnet.model import TDNet, resize_layer_norms

__all__ = ["TDNet", "resize_layer_norms"]
