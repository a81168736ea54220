"""The model zoo: a registry of named vision models with their default config as data.

Each :class:`ZooEntry` gives a factory returning a ``torch.nn.Module`` in eval
mode, the default input shape ``(N, C, H, W)`` NCHW, preprocessing (mean/std on
0..1 RGB), the paper and source repository, and the parameter count and MACs
measured on the exported ONNX graph at the default shape (checked by
``tests/zoo/test_registry.py``).

Families: MobileNetV4, GhostNet v1/v2/v3 and EfficientViT-M from timm
(huggingface/pytorch-image-models), and MCUNetV2 (our definition, see
:mod:`edgec.zoo.mcunetv2`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.errors import ModelError, UsageError, unknown_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: Registry name (``edgec build NAME``).
        family: Model family ("MobileNetV4", "GhostNet", ...).
        factory: ``factory(pretrained: bool, **kwargs) -> torch.nn.Module``.
        input_shape: Default input shape ``(1, 3, H, W)``, NCHW.
        mean: Per-channel mean on RGB scaled to [0, 1].
        std: Per-channel std on RGB scaled to [0, 1].
        paper: Citation of the architecture.
        source: Repository and file of the definition.
        params: Parameter count at the default config.
        macs: Multiply-accumulates of one inference at ``input_shape``.
        num_classes: Classifier outputs.
        alias_of: For an alias (``mobilenetv4``), the canonical name.
        pretrained_tag: timm pretrained tag, if timm has weights for it.
    """

    name: str
    family: str
    factory: Callable[..., Any]
    input_shape: tuple[int, int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    paper: str
    source: str
    params: int
    macs: int
    num_classes: int = 1000
    alias_of: str | None = None
    pretrained_tag: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Preprocessing as stored in manifests: resize to (H, W), scale to [0, 1], normalise."""
        return {"layout": "NCHW", "color": "RGB", "resize": list(self.input_shape[2:]),
                "scale": 1 / 255, "mean": list(self.mean), "std": list(self.std)}


_REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the registry (names are unique)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"duplicate zoo name {entry.name}")
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[ZooEntry]:
    """All entries, canonical names first within each family, in registration order."""
    return list(_REGISTRY.values())


def get(name: str) -> ZooEntry:
    """Look up a zoo entry.

    Raises:
        UsageError: ``name`` is not registered (the message suggests near names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("model", name, _REGISTRY, "edgec zoo list") from None


def create_model(name: str, *, pretrained: bool = False, weights: str | Path | None = None,
                 seed: int = 0, **kwargs: Any):
    """Instantiate a zoo model in eval mode.

    Args:
        name: Zoo name.
        pretrained: Use timm's pretrained weights (from the local Hugging Face
            cache, or online when reachable).
        weights: A PyTorch state dict file, loaded with ``weights_only=True``.
        seed: Seed for random initialisation (used when no weights are given); random
            models also get non-trivial BatchNorm statistics (:func:`randomize_batchnorm`).
        **kwargs: Passed to the factory (e.g. ``width_mult`` for MCUNetV2).

    Returns:
        ``torch.nn.Module`` in eval mode.

    Raises:
        UsageError: unknown name, or pretrained weights unavailable.
        ModelError: the weights file is missing, unsafe or does not match.
    """
    import torch

    entry = get(name)
    torch.manual_seed(seed)
    if pretrained:
        if entry.pretrained_tag is None:
            raise UsageError(f"no pretrained weights are published for '{name}'",
                             "use --weights FILE with a state dict, or drop --pretrained")
        _offline_unless_hub_reachable()
        try:
            model = entry.factory(pretrained=True, **kwargs)
        except Exception as exc:  # hub unreachable, not cached
            raise UsageError(
                f"pretrained weights for '{name}' are neither cached nor downloadable: "
                f"{type(exc).__name__}",
                "connect to the internet once, set HF_HOME to a cache that has them, "
                "or pass --weights FILE") from exc
    else:
        model = entry.factory(pretrained=False, **kwargs)
    if weights is not None:
        _load_weights(model, Path(weights))
    elif not pretrained:
        randomize_batchnorm(model, seed)
    return model.eval()


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics, like a trained network's.

    Fresh modules have mean 0, variance 1, gamma 1, beta 0, under which a wrong
    BN fold (e.g. one that forgets the variance) computes the same function and
    the numerical checks cannot see it. Drawn from a seeded generator:
    mean ~ U(-0.2, 0.2), var ~ U(0.5, 2), gamma ~ U(0.7, 1.3), beta ~ U(-0.2, 0.2).
    """
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.running_mean.numel()
                u = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
                m.running_mean.copy_(u(-0.2, 0.2))
                m.running_var.copy_(u(0.5, 2.0))
                if m.affine:
                    m.weight.copy_(u(0.7, 1.3))
                    m.bias.copy_(u(-0.2, 0.2))


def _offline_unless_hub_reachable(timeout: float = 3.0) -> None:
    """Switch huggingface_hub to offline mode (cache only) when its host cannot be reached.

    Without this, a machine with no internet waits for the hub client's retries
    (tens of seconds) before failing.
    """
    import os

    from edgec.net import tcp_reachable

    reachable = os.environ.get("HF_HUB_OFFLINE") != "1" and tcp_reachable("huggingface.co", 443, timeout) is None
    if not reachable:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import huggingface_hub.constants as hf_constants

            hf_constants.HF_HUB_OFFLINE = True
        except ImportError:
            pass


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _unwrap_state_dict(state):
    """The state dict inside common checkpoint shapes: ``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"model_state_dict": ...}``, ``{"module": ...}``; a ``module.`` prefix (DataParallel) is dropped."""
    for key in ("state_dict", "model_state_dict", "model", "module", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and state[key] and all(
                isinstance(k, str) for k in state[key]):
            inner = state[key]
            if any(hasattr(v, "shape") for v in inner.values()):
                state = inner
                break
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_weights(model, path: Path) -> None:
    import torch

    if path.is_dir():
        raise ModelError(f"--weights {path} is a folder, not a weights file", "give a file saved with torch.save")
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", "check the --weights path")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}", "check the --weights path") from exc
    if head not in (b"PK", b"\x80\x02"):  # torch.save writes a zip archive (a pickle before PyTorch 1.6)
        raise ModelError(f"{path} is not a PyTorch file (torch.save writes a zip archive)",
                         "give a state dict saved with torch.save(model.state_dict(), FILE)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = " ".join(_strip_ansi(str(exc)).split())
        reason = "it holds Python objects besides tensors (unsafe to load)" if "weights_only" in first.lower() \
            else first[:300]
        raise ModelError(f"cannot load weights {path}: {reason}",
                         "save a plain state dict: torch.save(model.state_dict(), FILE)") from exc
    state = _unwrap_state_dict(state)
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict",
                         "save it with torch.save(model.state_dict(), FILE)")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [ln.strip() for ln in _strip_ansi(str(exc)).splitlines() if "size mismatch" in ln]
        shown = "; ".join(lines[:2]) + (f" (+{len(lines) - 2} more)" if len(lines) > 2 else "")
        raise ModelError(f"weights in {path} do not match the model: {shown or str(exc).splitlines()[0][:200]}",
                         "use weights trained for this exact zoo entry (and its --width-mult)") from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

        parts = ([f"{len(missing)} missing keys: {few(missing)}"] if missing else []) + \
            ([f"{len(unexpected)} unexpected keys: {few(unexpected)}"] if unexpected else [])
        raise ModelError(f"weights in {path} do not match the model: {'; '.join(parts)}",
                         "use weights trained for this exact zoo entry (and its --width-mult)")
