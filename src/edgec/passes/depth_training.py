"""Depth compression's training side (Kim et al., "Efficient Latency-Aware CNN Depth Compression via
Two-Stage Dynamic Programming", ICML 2023): the importance of removing a segment's activations (section
4.2: KL divergence from the original after a short distillation of that network), the fine-tuning of the
linearised model by distillation, and the check that merging the fine-tuned groups is exact.

Networks run as PyTorch modules built from the ONNX graph (:func:`edgec.frontend.trainable.graph_module`,
the Conv/Gemm weights as parameters, activations skippable by name); images are ``(N, C, H, W)`` float32
NCHW, labels ``(N,)`` int64. The flow that plans, times and writes is :mod:`edgec.flows.depth_compress`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from edgec.errors import UsageError, raise_if_interrupted
from edgec.frontend.reference import PASS_RTOL, compare
from edgec.passes.depth_chains import Chain


def _kl(teacher, student, temperature: float = 1.0) -> Any:
    """Mean KL divergence of the student's class distribution from the teacher's (logits, at ``temperature``)."""
    import torch

    t = torch.log_softmax(torch.as_tensor(teacher) / temperature, dim=-1)
    s = torch.log_softmax(student / temperature, dim=-1)
    return torch.sum(torch.exp(t) * (t - s), dim=-1).mean()


def _shifted(x, shift: int, gen):
    """Each image rolled by its own random offset of up to ``shift`` pixels (augmentation)."""
    import torch

    offsets = torch.randint(-shift, shift + 1, (len(x), 2), generator=gen)
    return torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(-2, -1)) for img, (dy, dx) in zip(x, offsets)])


def segment_importance(model: onnx.ModelProto, chains: list[Chain], images: np.ndarray,
                       train: tuple[np.ndarray, np.ndarray] | None = None, steps: int = 0, lr: float = 1e-3,
                       seed: int = 0, progress: Callable[[int, int], None] | None = None
                       ) -> dict[tuple[int, int, int], float]:
    """``(chain, i, j) -> -KL`` for every segment with at least one activation inside (others score 0).

    The KL divergence of the class distribution from the original model's, on ``images`` (``(N, C, H, W)``
    float32), with the segment's activations removed. With ``steps > 0`` each segment's network is first
    fine-tuned for ``steps`` distillation steps on ``train`` (images, labels), the activations fading out over
    the first half, starting from the original weights each time: the paper's importance (Kim et al., ICML
    2023, section 4.2: accuracy after a short fine-tune per segment) measures what fine-tuning can recover,
    which the bare KL does not. ``progress(done, total)`` after each segment.
    """
    import torch

    from edgec.frontend.trainable import graph_module

    t_net = graph_module(model).eval()
    x = torch.from_numpy(images)
    with torch.no_grad():
        teacher = t_net(x).numpy()
    segments = {}
    for c, chain in enumerate(chains):
        for i in range(len(chain)):
            for j in range(i + 2, len(chain) + 1):
                acts = {chain.layers[p - 1].act for p in range(i + 1, j) if chain.removable(p)}
                if acts:
                    segments[(c, i, j)] = acts
    out = {}
    bare = graph_module(model).eval()
    for n, (key, acts) in enumerate(segments.items()):
        net = bare
        if steps > 0:
            net = graph_module(model, skip=acts)
            _distil(net, t_net, *train, steps, lr, seed, fade_steps=max(1, steps // 2))
            net.eval()
        net.skip = acts
        with torch.no_grad():
            out[key] = -float(_kl(teacher, net(x)))
        if progress is not None:
            progress(n + 1, len(segments))
    return out


#: Largest gradient norm of a fine-tuning step. Without it, a well-trained digits model (98%) with 24
#: activations removed diverged once they had faded out (loss 0.6 -> 13, top-1 76%; 40 epochs: 38%).
GRAD_CLIP = 1.0

#: Distillation temperature (Hinton et al., 2015): soft targets carry the teacher's similarities between classes.
TEMPERATURE = 4.0


def _distil(net, t_net, images: np.ndarray, labels: np.ndarray, steps: int, lr: float, seed: int,
            fade_steps: int = 0, progress: Callable[[int, float], None] | None = None) -> None:
    """``steps`` AdamW steps (batch 64, one-cycle lr peaking at ``lr``) training ``net`` towards ``t_net``:
    ``T^2 * KL_T`` at ``T`` = :data:`TEMPERATURE` plus cross-entropy on ``labels``; each image randomly shifted
    by up to 1/16 of its width (both networks see the same image). ``net``'s skipped activations fade out
    over the first ``fade_steps`` (``net.blend`` from 1 to 0) and are the identity after. ``progress(step,
    mean loss)`` is called at the end of each pass over the images."""
    import torch

    torch.manual_seed(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    batch = 64
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    shift = max(1, images.shape[-1] // 16) if images.ndim == 4 else 0
    step = 0
    while step < steps:
        total, seen = 0.0, 0
        for idx in torch.randperm(len(images), generator=gen).split(batch):
            if step == steps:
                break
            raise_if_interrupted()
            net.blend = max(0.0, 1.0 - step / fade_steps) if fade_steps else 0.0
            step += 1
            x = _shifted(x_all[idx], shift, gen) if shift else x_all[idx]
            with torch.no_grad():
                target = t_net(x)
            out = net(x)
            loss = TEMPERATURE ** 2 * _kl(target, out, TEMPERATURE) + torch.nn.functional.cross_entropy(out, y_all[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        if progress is not None:
            progress(step, total / max(1, seen))
    net.blend = 0.0


def finetune(student: onnx.ModelProto, teacher: onnx.ModelProto, images: np.ndarray, labels: np.ndarray,
             opts: Any, remove: set[str] = frozenset(),
             progress: Callable[[int, int, float], None] | None = None) -> onnx.ModelProto:
    """Distil ``teacher`` into ``student`` (same graph interface) for ``opts.epochs`` epochs (:func:`_distil`).
    The activations named in ``remove`` fade out over the first half of the steps (``b * act(x) + (1 - b) * x``,
    ``b`` from 1 to 0 linearly, as DepthShrinker removes them gradually; Fu et al., ICML 2022) and are the
    identity for the second half.

    Args:
        images: ``(N, C, H, W)`` float32 training images, preprocessed. labels: ``(N,)`` int64.
        opts: ``epochs``, ``lr`` (peak, AdamW with a one-cycle schedule) and ``seed``
            (:class:`edgec.flows.depth_compress.CompressOptions`).

    Returns:
        ``student`` with its Conv/Gemm/MatMul weights trained.
    """
    from edgec.frontend.trainable import graph_module

    t_net = graph_module(teacher).eval()
    net = graph_module(student, skip=remove)
    if opts.epochs == 0:
        return net.to_onnx()
    per_epoch = -(-len(images) // 64)
    steps = opts.epochs * per_epoch
    _distil(net, t_net, images, labels, steps, opts.lr, opts.seed, fade_steps=max(1, steps // 2),
            progress=None if progress is None else lambda step, loss: progress(step // per_epoch, opts.epochs, loss))
    return net.to_onnx()


def ort_scores(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """The model's outputs (onnxruntime, float32) on ``images``, ``(N, classes)``."""
    from edgec.frontend.reference import ort_session

    sess = ort_session(model, optimized=True)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])


def check_merge(linear: onnx.ModelProto, merged: onnx.ModelProto, images: np.ndarray) -> dict[str, float]:
    """Merging is exact: the merged model (float32, onnxruntime) within 1e-5 * max(1, max|ref|) of the
    linear one computed in float64, on a few images.

    Against a float64 reference, because the float32 linear model is not the truth either: a merged 7x7
    convolution rounds differently from the three convolutions it replaces, and on a digits model with a
    dozen merged groups and logits near 18 the two float32 models differed by 1.2e-5 relative. onnxruntime has no float64 Conv, so the float64 reference runs
    the linear model's graph in PyTorch (:func:`edgec.frontend.trainable.graph_module`, the module the
    fine-tuning trains). Reported: the merged model's error, and the float32 linear model's (onnxruntime)
    against the same reference.

    Raises:
        UsageError: the merged model is off by more than the tolerance.
    """
    import torch

    from edgec.frontend.trainable import graph_module

    net = graph_module(linear).double().eval()
    net.consts = {k: v.double() if v.is_floating_point() else v for k, v in net.consts.items()}
    with torch.no_grad():
        ref = net(torch.from_numpy(images.astype(np.float64))).numpy()
    reference = "linear model in float64"
    own = ort_scores(linear, images)
    got = ort_scores(merged, images)
    cmp = compare([got], [ref], rtol=PASS_RTOL, check_top1=False)
    if cmp.passed is not True:
        why = cmp.reason or f"max abs error {cmp.max_abs_error:.3g} > {cmp.tolerance:.3g}"
        raise UsageError(f"merging the compressed groups changed the output against the {reference}: {why}",
                         "report this model: the composition should be exact")
    return {"max_abs_error": cmp.max_abs_error, "max_abs_ref": cmp.max_abs_ref, "tolerance": cmp.tolerance,
            "reference": reference,
            "linear_float32_error": compare([own], [ref], check_top1=False).max_abs_error}
