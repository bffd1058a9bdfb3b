"""GSVNet (Lee, Chen, Peng, ICME 2021) in PyTorch: keyframe nets, flow net, propagation head."""
