"""The ONNX graph as a trainable torch module: same outputs as onnxruntime, skipped activations act as
the identity, trained weights go back into the same initializers, unknown ops are named."""

import numpy as np
import onnx
import pytest
import torch

from edgec.errors import UsageError
from edgec.frontend.reference import run_ort
from edgec.frontend.trainable import graph_module
from passes.test_depth_chains import X, mbv2_like


def test_matches_onnxruntime_at_batch_one_and_runs_batched():
    m = mbv2_like()
    net = graph_module(m)
    ref = run_ort(m, X)[0]
    got = net(torch.from_numpy(X["x"])).detach().numpy()
    assert np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    batch = torch.from_numpy(np.repeat(X["x"], 3, axis=0))
    out = net(batch).detach().numpy()
    assert out.shape == (3, 5) and np.allclose(out, np.repeat(got, 3, axis=0), atol=1e-5)


def test_skipped_activations_are_the_identity():
    m = mbv2_like()
    net = graph_module(m, skip={"fa"})
    without = onnx.ModelProto()
    without.CopyFrom(m)
    for n in without.graph.node:
        if n.output[0] == "fa":
            n.op_type, n.input[:] = "Identity", n.input[:1]
    ref = run_ort(without, X)[0]
    got = net(torch.from_numpy(X["x"])).detach().numpy()
    assert np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert not np.allclose(ref, run_ort(m, X)[0])


def test_trained_weights_are_written_back():
    m = mbv2_like()
    net = graph_module(m)
    assert len(list(net.parameters())) == 16  # 7 convs and the Gemm, weight and bias each
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = net(torch.from_numpy(X["x"])).square().sum()
    loss.backward()
    opt.step()
    new = net.to_onnx()
    got = run_ort(new, X)[0]
    assert np.allclose(got, net(torch.from_numpy(X["x"])).detach().numpy(), atol=1e-4)
    assert not np.allclose(got, run_ort(m, X)[0])


def test_an_op_it_cannot_run_is_named():
    m = mbv2_like()
    for n in m.graph.node:
        if n.output[0] == "sa":
            n.op_type = "Softplus"
    with pytest.raises(UsageError, match="cannot run op Softplus"):
        graph_module(m)


def test_blend_fades_a_skipped_activation_out():
    m = mbv2_like()
    x = torch.from_numpy(X["x"])
    full, gone = graph_module(m)(x), graph_module(m, skip={"fa"})(x)
    net = graph_module(m, skip={"fa"})
    net.blend = 1.0
    assert torch.allclose(net(x), full, atol=1e-5)
    net.blend = 0.25
    half = net(x)
    assert not torch.allclose(half, full) and not torch.allclose(half, gone)
