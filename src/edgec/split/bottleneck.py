"""A learned bottleneck at the cut: an encoder at the end of the head squeezes the cut tensor to
``C`` channels, the int8 codes of its output travel, and a decoder at the start of the tail
restores the cut tensor.

Training is head-network distillation (Matsubara et al., "Head Network Distillation", IEEE
Access 2019; the BottleFit recipe, Matsubara et al., WoWMoM 2022, Sec. III; sc2bench's
``HeadNetworkDistillation``): the teacher is the original head's output on the training
images, the loss is the MSE between the decoder's output and the teacher, and the tail is
frozen. Here the original head is frozen too, so only the encoder and decoder learn, and the
teacher's outputs are computed once with onnxruntime. The int8 rounding is in the loop
during training (straight-through estimator, Bengio et al. 2013), so the codes the encoder
learns survive quantization.

Encoder: ``Conv3x3(Cc->Cc) -> ReLU -> Conv1x1(Cc->C)``; decoder: ``Conv1x1(C->Cc) -> ReLU ->
Conv3x3(Cc->Cc)`` (stride 1, padding 1), so the transmitted tensor is ``(1, C, H, W)`` where
the cut tensor is ``(1, Cc, H, W)``. This changes the function on purpose: the build reports
its fidelity and, with ``--data``, the accuracy it costs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.errors import UsageError

SENT = "bottleneck"  # the name of the transmitted tensor


@dataclass
class Bottleneck:
    """A trained encoder/decoder pair.

    Attributes:
        channels: ``C``, channels of the transmitted tensor.
        encoder, decoder: ``[(weight (O, I, k, k) float32, bias (O,) float32, relu_after: bool)]``.
        train_mse: Final mean squared error of the decoded cut tensor on the training images.
        epochs: Epochs trained.
        seconds: Training wall time (s).
        teacher_images: Images the teacher's outputs were computed on.
    """

    channels: int
    encoder: list[tuple[np.ndarray, np.ndarray, bool]]
    decoder: list[tuple[np.ndarray, np.ndarray, bool]]
    train_mse: float
    epochs: int
    seconds: float
    teacher_images: int

    def record(self) -> dict[str, Any]:
        return {"channels": self.channels, "epochs": self.epochs, "train_mse": self.train_mse,
                "train_seconds": round(self.seconds, 2), "teacher_images": self.teacher_images,
                "method": "head-network distillation (MSE to the original head's output; head and tail frozen)"}


def _convs(in_ch: int, mid: int, out_ch: int, first_k: int, second_k: int):
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(in_ch, mid, first_k, padding=first_k // 2), torch.nn.ReLU(),
                               torch.nn.Conv2d(mid, out_ch, second_k, padding=second_k // 2))


def _fake_int8(z):
    """Per-tensor affine int8 rounding of ``z`` over its batch range, gradients passed straight through."""
    import torch

    lo, hi = torch.clamp(z.min().detach(), max=0.0), torch.clamp(z.max().detach(), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
    q = torch.round((z - lo) / scale) * scale + lo
    return z + (q - z).detach()


def train_bottleneck(teacher: np.ndarray, channels: int, epochs: int, *, seed: int = 0,
                     progress: Any = None) -> Bottleneck:
    """Train an encoder/decoder on the cut tensor's values.

    Args:
        teacher: ``(N, Cc, H, W)`` float32, the original head's output on N training images.
        channels: ``C`` (1 <= C <= Cc).
        epochs: Passes over the N tensors (>= 1); Adam, one-cycle lr up to 3e-3, batch 64.
        seed: Seed of initialisation and batch order.
        progress: Called as ``progress(epoch, epochs, mse)`` after each epoch, if given.

    Raises:
        UsageError: a cut tensor that is not ``(N, C, H, W)``; ``channels`` out of range; ``epochs < 1``.
    """
    import torch

    if teacher.ndim != 4:
        raise UsageError(f"a learned bottleneck needs a (N, C, H, W) cut tensor; this one is "
                         f"{[1, *teacher.shape[1:]]}",
                         "cut at a convolutional feature map, or use --encoding int8")
    cc = teacher.shape[1]
    if not 1 <= channels <= cc:
        raise UsageError(f"--bottleneck-channels {channels} must be between 1 and the cut's {cc} channels",
                         f"e.g. --bottleneck-channels {max(1, cc // 4)}")
    if epochs < 1:
        raise UsageError(f"--epochs {epochs} must be at least 1", "e.g. --epochs 20")
    torch.manual_seed(seed)
    enc, dec = _convs(cc, cc, channels, 3, 1), _convs(channels, cc, cc, 1, 3)
    params = list(enc.parameters()) + list(dec.parameters())
    batch = 64
    steps = epochs * -(-len(teacher) // batch)
    opt = torch.optim.Adam(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    data = torch.from_numpy(np.ascontiguousarray(teacher, np.float32))
    gen = torch.Generator().manual_seed(seed)
    start, mse = time.perf_counter(), float("nan")
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(data), generator=gen).split(batch):
            t = data[idx]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(dec(_fake_int8(enc(t))), t)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        mse = total / len(data)
        if progress is not None:
            progress(epoch + 1, epochs, mse)

    def layers(seq) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        convs = [m for m in seq if isinstance(m, torch.nn.Conv2d)]
        return [(c.weight.detach().numpy().copy(), c.bias.detach().numpy().copy(), i == 0)
                for i, c in enumerate(convs)]

    return Bottleneck(channels, layers(enc), layers(dec), mse, epochs, time.perf_counter() - start, len(teacher))


def _conv_nodes(layers, src: str, dst: str, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes, inits, x = [], [], src
    for i, (w, b, relu) in enumerate(layers):
        wn, bn = f"{prefix}.{i}.weight", f"{prefix}.{i}.bias"
        inits += [numpy_helper.from_array(w.astype(np.float32), wn), numpy_helper.from_array(b.astype(np.float32), bn)]
        last = i == len(layers) - 1
        y = dst if last and not relu else f"{prefix}.{i}.conv"
        k = w.shape[-1]
        nodes.append(helper.make_node("Conv", [x, wn, bn], [y], name=f"{prefix}.{i}", kernel_shape=[k, k],
                                      pads=[k // 2] * 4, strides=[1, 1]))
        if relu:
            x = dst if last else f"{prefix}.{i}.relu"
            nodes.append(helper.make_node("Relu", [y], [x], name=f"{prefix}.{i}.relu"))
        else:
            x = y
    return nodes, inits


def _value_info(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def attach(head: onnx.ModelProto, tail: onnx.ModelProto, cut: str, bottleneck: Bottleneck
           ) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The head with the encoder appended (output ``bottleneck``, ``(1, C, H, W)``) and the tail with the
    decoder prepended (input ``bottleneck``); both checked ONNX models, the originals untouched.

    Raises:
        UsageError: the head's output or the tail's input is not ``cut``.
    """
    head, tail = onnx.ModelProto.FromString(head.SerializeToString()), onnx.ModelProto.FromString(
        tail.SerializeToString())
    if [o.name for o in head.graph.output] != [cut] or cut not in [i.name for i in tail.graph.input]:
        raise UsageError(f"the bottleneck goes at the cut '{cut}', which the parts do not meet at",
                         "cut with edgec.split.split_model first")
    shape = [d.dim_value for d in head.graph.output[0].type.tensor_type.shape.dim]
    sent_shape = [shape[0], bottleneck.channels, *shape[2:]]
    nodes, inits = _conv_nodes(bottleneck.encoder, cut, SENT, "bottleneck_encoder")
    head.graph.node.extend(nodes)
    head.graph.initializer.extend(inits)
    del head.graph.output[:]
    head.graph.output.append(_value_info(SENT, sent_shape))
    nodes, inits = _conv_nodes(bottleneck.decoder, SENT, cut, "bottleneck_decoder")
    for n in reversed(nodes):
        tail.graph.node.insert(0, n)
    tail.graph.initializer.extend(inits)
    kept = [i for i in tail.graph.input if i.name != cut]
    del tail.graph.input[:]
    tail.graph.input.extend([_value_info(SENT, sent_shape), *kept])
    for part in (head, tail):
        onnx.checker.check_model(part, full_check=True)
    return head, tail
