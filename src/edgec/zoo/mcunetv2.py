"""MCUNetV2 as a PyTorch module, built from its published architecture config.

Source: Lin et al., "MCUNetV2: Memory-Efficient Patch-based Inference for Tiny
Deep Learning", NeurIPS 2021. The config (``mcunetv2_large.json``) was read from
the int8 TFLite file ``assets/mcunetv2_large.tflite`` in mit-han-lab/tinyengine;
only the architecture is used, weights are randomly initialised.

Layout: input ``(N, 3, H, W)`` NCHW float32, output ``(N, num_classes)`` logits.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CONFIG_FILE = "mcunetv2_large.json"


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Load an MCUNetV2 architecture config.

    Args:
        path: A JSON file in the format of ``edgec/zoo/mcunetv2_large.json``;
            defaults to the copy shipped with edgec.

    Returns:
        The parsed config dict (``stem``, ``blocks``, ``feature_mix``, ``classifier``).
    """
    if path is None:
        text = resources.files("edgec.zoo").joinpath(_CONFIG_FILE).read_text()
    else:
        text = Path(path).read_text()
    return json.loads(text)


def _scaled(channels: int, width_mult: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width_mult``, rounded to a multiple of ``divisor``.

    ``width_mult == 1`` keeps the config's channel counts exactly.
    """
    if width_mult == 1.0:
        return channels
    value = max(divisor, int(channels * width_mult + divisor / 2) // divisor * divisor)
    if value < 0.9 * channels * width_mult:
        value += divisor
    return value


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-excite: mean over (H, W) -> 1x1 conv C->r, ReLU -> 1x1 conv r->C -> hard-sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: [1x1 expand, ReLU6] -> kxk depthwise, ReLU6 -> [SE] -> 1x1 project [+ x]."""

    def __init__(self, cin: int, cout: int, expand: int | None, kernel: int | None, stride: int,
                 se: int | None, residual: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expand is None:
            # Block 0 of mcunetv2_large is a single 1x1 conv (no depthwise in the file).
            layers.append(_conv_bn(cin, cout, 1, stride, act=False))
        else:
            layers.append(_conv_bn(cin, expand, 1))
            layers.append(_conv_bn(expand, expand, kernel, stride, groups=expand))
            if se:
                layers.append(SqueezeExcite(expand, se))
            layers.append(_conv_bn(expand, cout, 1, act=False))
        self.body = nn.Sequential(*layers)
        self.residual = residual and stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MCUNetV2(nn.Module):
    """MCUNetV2 network.

    Args:
        config: Architecture dict (see :func:`load_config`).
        width_mult: Channel width multiplier; channels are rounded to multiples of 8.
        num_classes: Classifier outputs.

    Input ``(N, 3, H, W)`` float32 (any H, W divisible by 32); output ``(N, num_classes)``.
    """

    def __init__(self, config: dict[str, Any], width_mult: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        w = lambda c: _scaled(c, width_mult)  # noqa: E731
        se_w = lambda c: max(1, round(c * width_mult)) if c else None  # noqa: E731
        stem = config["stem"]
        layers: list[nn.Module] = [_conv_bn(3, w(stem["out"]), stem["kernel"], stem["stride"])]
        for b in config["blocks"]:
            layers.append(InvertedResidual(
                w(b["in"]), w(b["out"]), w(b["expand"]) if b["expand"] else None, b["kernel"],
                b["stride"], se_w(b["se"]), b["residual"]))
        mix = config["feature_mix"]
        last_block_out = w(config["blocks"][-1]["out"])
        layers.append(_conv_bn(last_block_out, w(mix["out"]), mix["kernel"]))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w(mix["out"]), num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He (fan-in) init for convs, so that activations keep their scale through the network in eval mode (fan-out init shrinks every depthwise layer ~C-fold and random-weight outputs stop depending on the input); N(0, 0.01) for the classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mcunetv2_large(width_mult: float = 1.0, num_classes: int = 1000, **_: Any) -> MCUNetV2:
    """MCUNetV2-large (ImageNet config) with random weights."""
    return MCUNetV2(load_config(), width_mult=width_mult, num_classes=num_classes)
