"""Layers torch.nn lacks in the form the IR uses (ConvNeXt and EfficientNet pieces), plain torch only."""

import torch
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels (dim 1) at every position, as torchvision's ConvNeXt LayerNorm2d."""

    def forward(self, x):
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class Scale(nn.Module):
    """Multiplies by one learned value per channel along `axis` (ConvNeXt's layer scale)."""

    def __init__(self, channels, axis=1, init=1e-6):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x):
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return x * self.weight.view(shape)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: in training, zero the input per sample (row) or for the whole
    batch with probability p and scale the rest by 1 / (1 - p); identity in eval."""

    def __init__(self, p=0.5, mode="row"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise
