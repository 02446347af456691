"""Grouped forwards: a population's small CNNs run with activations kept as (B, K*C, H, W).

Under ``vmap`` a convolution over K models lowers to one grouped convolution, but every following op's
batching rule (max-pool, bias add, flatten) moves the model axis back into the batch axis, which copies the
whole activation twice per layer: a profile of the cnn-s step at K=64 on a CPU spends about a third of its time
in those copies. Written directly in the grouped layout, the same network does no such copy and its step is
about twice as fast. The arithmetic is the module's own (same ops, same order per model); the population tests
compare it with single-model training like the ``vmap`` path.

Only architectures with a grouped forward here take this path (``grouped_forward``); every other one uses
``vmap`` over ``functional_call``, which needs no code per architecture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.architectures.modules import ConvNet

from .streams import StreamDropout, uniform


def grouped_forward(template: nn.Module) -> Callable | None:
    """``forward(params, x, drop_p, step_key) -> logits (K, B, classes)`` for ``template``, or None.

    ``params``: stacked (K, ...) tensors by name; ``x``: (K, B, C, H, W), or (B, C, H, W) shared by every model;
    ``drop_p``: (K,) rates; ``step_key``:
    (K,) stream keys of this step (dropout draws the same numbers as ``StreamDropout`` under ``vmap``)."""
    stateless = all(isinstance(m, StreamDropout) for m in template.modules() if list(m.buffers(recurse=False)))
    if type(template) is ConvNet and stateless and all(getattr(template, n).groups == 1 for n in template.convs):
        return _convnet(template)
    return None


def _dropout(module: nn.Module, x: torch.Tensor, per_model_shape: tuple[int, ...], drop_p: torch.Tensor,
             step_key: torch.Tensor, to_grouped: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``StreamDropout`` on a grouped activation: each model's mask over its own (B, ...) tensor, as under vmap."""
    if not isinstance(module, StreamDropout) or not module.training:
        return x
    k = drop_p.shape[0]
    keep = uniform(step_key, per_model_shape, module.salt) >= drop_p.view(k, *([1] * len(per_model_shape)))
    scale = (1 / (1 - drop_p)).to(x.dtype).view(k, *([1] * len(per_model_shape)))
    return x * to_grouped(keep.to(x.dtype) * scale)


def _convnet(net: ConvNet) -> Callable:
    convs = [getattr(net, n) for n in net.convs]

    def forward(params: dict, x: torch.Tensor, drop_p: torch.Tensor, step_key: torch.Tensor) -> torch.Tensor:
        k = drop_p.shape[0]
        if x.dim() == 5:  # (K, B, C, H, W) -> (B, K*C, H, W), channels-last (oneDNN's fast grouped convolution)
            b = x.shape[1]
            h = x.transpose(0, 1).reshape(b, -1, *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        else:  # (B, C, H, W), one input for every model (evaluation): the first layer is one ungrouped conv
            b = x.shape[0]
            h = x.contiguous(memory_format=torch.channels_last)
        for i, (name, conv, pool) in enumerate(zip(net.convs, convs, net.pools)):
            w = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                         conv.stride, conv.padding, conv.dilation, groups=1 if i == 0 and x.dim() == 4 else k)
            if pool:
                h = F.max_pool2d(h, 2, 2)
            h = net.act(h)
            c, hh, ww = w.shape[1], h.shape[2], h.shape[3]

            def to_grouped(t, b=b, hh=hh, ww=ww):  # (K, B, C, H, W) -> (B, K*C, H, W)
                return t.permute(1, 0, 2, 3, 4).reshape(b, -1, hh, ww)

            h = _dropout(net.dropouts[i], h, (b, c, hh, ww), drop_p, step_key, to_grouped)
        c = h.shape[1] // k
        if net.global_pool:
            features = h.mean(dim=(2, 3)).view(b, k, c).transpose(0, 1)  # (K, B, C)
        else:
            features = h.reshape(b, k, c, h.shape[2], h.shape[3]).permute(1, 0, 2, 3, 4).reshape(k, b, -1)
        if hasattr(net, "fc1"):
            hidden = _dense(params, "fc1", features)
            hidden = net.act(hidden)
            hidden = _dropout(net.dropouts[-1], hidden, tuple(hidden.shape[1:]), drop_p, step_key, lambda t: t)
            return _dense(params, "fc2", hidden)
        return _dense(params, "fc", features)

    return forward


def _dense(params: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """Per-model linear layer: (K, B, in) @ (K, in, out) + (K, 1, out)."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), x, params[f"{name}.weight"].transpose(1, 2))
