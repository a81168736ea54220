"""When TVM's ONNX importer fails, the message names the op, the node and the opset."""

import onnx
import pytest

from conftest import tiny_cnn
from edgec.errors import UnsupportedOpError


def test_importer_failure_names_op_node_and_opset(tmp_path, monkeypatch):
    from tvm.relax.frontend.onnx import onnx_frontend

    from edgec.backends.tvm.importer import import_onnx

    def boom(cls, bb, inputs, attr, params):
        raise ValueError("this converter failed")

    monkeypatch.setattr(onnx_frontend.Relu, "_impl_v13", classmethod(boom))
    model = onnx.load(str(tiny_cnn(tmp_path / "t.onnx")))
    with pytest.raises(UnsupportedOpError) as exc:
        import_onnx(model, {"x": (1, 3, 16, 16)})
    line = exc.value.one_line()
    assert "on op Relu (node 'relu1', opset 17): this converter failed" in line and "\n" not in line
