"""Deformable convolution with torchvision's semantics, written with plain torch operations."""

import torch
from torch import nn


def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
    """Deformable 2-d convolution (same semantics as torchvision.ops.deform_conv2d).

    Each kernel tap samples the input bilinearly at its regular position plus a learned offset; points
    outside the image read zero. `offset` holds (dy, dx) pairs per kernel position per offset group:
    shape (N, 2 * offset_groups * kh * kw, Ho, Wo). The optional `mask` (N, offset_groups * kh * kw,
    Ho, Wo) multiplies every sample (modulated deformable convolution, DCNv2).
    """
    n, c, h, w = input.shape
    out_channels, group_channels, kh, kw = weight.shape
    groups = c // group_channels
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    samples = taps * ho * wo

    def arange(size, step, start=0):
        return torch.arange(size, device=input.device, dtype=input.dtype) * step + start

    tap_y = arange(kh, dilation[0]).repeat_interleave(kw).reshape(taps, 1, 1)
    tap_x = arange(kw, dilation[1]).repeat(kh).reshape(taps, 1, 1)
    out_y = arange(ho, stride[0], -padding[0]).reshape(1, ho, 1)
    out_x = arange(wo, stride[1], -padding[1]).reshape(1, 1, wo)
    offset = offset.reshape(n, offset_groups, taps, 2, ho, wo)
    y = tap_y + out_y + offset[:, :, :, 0]
    x = tap_x + out_x + offset[:, :, :, 1]

    y_low, x_low = y.floor(), x.floor()
    frac_y, frac_x = y - y_low, x - x_low
    y_low, x_low = y_low.long(), x_low.long()
    pixels = input.reshape(n, offset_groups, c // offset_groups, h * w)
    sampled = input.new_zeros(n, offset_groups, c // offset_groups, samples)
    corners = (
        (0, 0, (1 - frac_y) * (1 - frac_x)),
        (0, 1, (1 - frac_y) * frac_x),
        (1, 0, frac_y * (1 - frac_x)),
        (1, 1, frac_y * frac_x),
    )
    for dy, dx, corner_weight in corners:
        cy, cx = y_low + dy, x_low + dx
        inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).reshape(n, offset_groups, 1, samples)
        values = pixels.gather(3, index.expand(n, offset_groups, c // offset_groups, samples))
        sampled = sampled + values * (corner_weight * inside).reshape(n, offset_groups, 1, samples)
    if mask is not None:
        sampled = sampled * mask.reshape(n, offset_groups, 1, samples)

    columns = sampled.reshape(n, groups, group_channels * taps, ho * wo)
    kernels = weight.reshape(groups, out_channels // groups, group_channels * taps)
    out = torch.matmul(kernels, columns).reshape(n, out_channels, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Deformable convolution layer: forward(input, offset, mask=None); weight and bias as in nn.Conv2d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        super().__init__()

        def pair(value):
            return tuple(value) if isinstance(value, (tuple, list)) else (value, value)

        self.kernel_size, self.stride, self.padding, self.dilation = map(pair, (kernel_size, stride, padding, dilation))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            bound = 1 / (self.weight[0].numel() ** 0.5)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input, offset, mask=None):
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
