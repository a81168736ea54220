"""Zoo entries: MobileNetV4, GhostNet v1/v2/v3, EfficientViT-M, MobileNetV2 (timm) and MCUNetV2.

Each entry's data -- timm's default config (input size, mean/std, classes, pretrained
tag) and the parameter count and MACs measured on the exported ONNX graph at the
default input shape -- is stored in ``figures.json`` when edgec is released
(regenerate with ``python -m edgec.zoo.figures --write``; ``tests/zoo`` checks it
against timm and against measurement). Listing the zoo and checking a name import
neither torch nor timm; only creating a model does.
"""

from __future__ import annotations

import json
from functools import partial
from importlib import resources
from typing import Any

from edgec.zoo.registry import (IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, ZooEntry,
                                register)

TIMM_REPO = "huggingface/pytorch-image-models"

FAMILIES: dict[str, dict[str, Any]] = {
    "MobileNetV4": {
        "alias": ("mobilenetv4", "mobilenetv4_conv_small"),
        "names": ["mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_conv_large",
                  "mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_large"],
        "paper": "Qin et al., MobileNetV4: Universal Models for the Mobile Ecosystem, ECCV 2024 (arXiv:2404.10518)",
        "source": f"{TIMM_REPO} timm/models/mobilenetv3.py (_gen_mobilenet_v4)",
    },
    "GhostNet": {
        "alias": ("ghostnet", "ghostnet_100"),
        "names": ["ghostnet_050", "ghostnet_100", "ghostnet_130",
                  "ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160",
                  "ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"],
        "paper": ("Han et al., GhostNet: More Features from Cheap Operations, CVPR 2020; "
                  "Tang et al., GhostNetV2: Enhance Cheap Operation with Long-Range Attention, NeurIPS 2022; "
                  "Liu et al., GhostNetV3: Exploring the Training Strategies for Compact Models, arXiv:2404.11202"),
        "source": f"{TIMM_REPO} timm/models/ghostnet.py",
    },
    "EfficientViT-M": {
        "alias": ("efficientvit", "efficientvit_m0"),
        "names": [f"efficientvit_m{i}" for i in range(6)],
        "paper": ("Liu et al., EfficientViT: Memory Efficient Vision Transformer with Cascaded Group "
                  "Attention, CVPR 2023 (arXiv:2305.07027)"),
        "source": f"{TIMM_REPO} timm/models/efficientvit_msra.py",
    },
    # The reference models of the patch-based inference figures (MCUNetV2, section 3).
    "MobileNetV2": {
        "alias": ("mobilenetv2", "mobilenetv2_100"),
        "names": ["mobilenetv2_035", "mobilenetv2_100"],
        "paper": ("Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018 "
                  "(arXiv:1801.04381)"),
        "source": f"{TIMM_REPO} timm/models/efficientnet.py (_gen_mobilenet_v2)",
    },
}


def _figures() -> dict[str, dict[str, int]]:
    return json.loads(resources.files("edgec.zoo").joinpath("figures.json").read_text())


def _timm_factory(timm_name: str, pretrained: bool = False, **kwargs: Any):
    import timm

    return timm.create_model(timm_name, pretrained=pretrained, **kwargs)


def _mcunet_factory(pretrained: bool = False, **kwargs: Any):
    from edgec.zoo.mcunetv2 import mcunetv2_large

    if pretrained:
        raise RuntimeError("no pretrained MCUNetV2 weights are distributed in PyTorch form")
    return mcunetv2_large(**kwargs)


def timm_config(name: str) -> dict[str, Any]:
    """timm's default config of ``name`` as stored in ``figures.json`` (imports timm)."""
    import timm

    cfg = timm.get_pretrained_cfg(name)
    return {"input_shape": [1, *cfg.input_size], "mean": list(cfg.mean), "std": list(cfg.std),
            "num_classes": cfg.num_classes or 1000, "pretrained_tag": cfg.hf_hub_id or None}


def _register_all() -> None:
    figures = _figures()

    def fig(name: str) -> dict[str, Any]:
        return figures.get(name, {"params": 0, "macs": 0})

    for family, info in FAMILIES.items():
        entries = {}
        for name in info["names"]:
            f = fig(name)
            entries[name] = register(ZooEntry(
                name=name, family=family, factory=partial(_timm_factory, name), input_shape=tuple(f["input_shape"]),
                mean=tuple(f["mean"]), std=tuple(f["std"]), paper=info["paper"], source=info["source"],
                params=f["params"], macs=f["macs"], num_classes=f["num_classes"],
                pretrained_tag=f["pretrained_tag"]))
        alias, canonical = info["alias"]
        e = entries[canonical]
        register(ZooEntry(name=alias, family=family, factory=e.factory, input_shape=e.input_shape, mean=e.mean,
                          std=e.std, paper=e.paper, source=e.source, params=e.params, macs=e.macs,
                          num_classes=e.num_classes, alias_of=canonical, pretrained_tag=e.pretrained_tag))

    common = dict(family="MCUNetV2", factory=_mcunet_factory, input_shape=(1, 3, 224, 224),
                  mean=INCEPTION_MEAN, std=INCEPTION_STD,
                  paper=("Lin et al., MCUNetV2: Memory-Efficient Patch-based Inference for Tiny Deep "
                         "Learning, NeurIPS 2021 (arXiv:2110.15352)"),
                  source="mit-han-lab/tinyengine assets/mcunetv2_large.tflite (architecture only); "
                         "edgec/zoo/mcunetv2.py",
                  params=fig("mcunetv2_large")["params"], macs=fig("mcunetv2_large")["macs"],
                  options={"width_mult": 1.0})
    register(ZooEntry(name="mcunetv2_large", **common))
    register(ZooEntry(name="mcunetv2", alias_of="mcunetv2_large", **common))


_register_all()

# Kept for the API: the ImageNet constants are re-exported for users of the zoo.
__all__ = ["FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD"]
