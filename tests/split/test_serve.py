"""Split computing over gRPC: a served tail answers its head, refuses hostile requests and keeps serving."""

import shutil
import subprocess
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import free_port, tiny_cnn
from edgec.errors import DeviceError, UsageError

PRE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


@pytest.fixture(scope="module")
def split_artifact(tmp_path_factory):
    from PIL import Image

    from edgec.flows.build import BuildOptions
    from edgec.flows.split import build_split

    tmp = tmp_path_factory.mktemp("serve")
    model = tiny_cnn(tmp / "m.onnx", size=16)
    result = build_split(BuildOptions(model=str(model), out_dir=tmp / "o", name="s"), "r1", "host", "host",
                         encoding="int8")
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")).save(tmp / "i.png")
    return result.artifact, tmp / "i.png"


@pytest.fixture(scope="module")
def server(split_artifact):
    from edgec.flows.serve import serve

    art, _ = split_artifact
    port = free_port()
    srv, service = serve(f"{art}:tail", port)
    yield f"127.0.0.1:{port}", service
    srv.stop(0)
    service.close()


def test_head_here_tail_on_the_server_equals_the_local_composition(split_artifact, server):
    from edgec.flows.run import run_image
    from edgec.flows.serve import run_remote

    art, image = split_artifact
    address, service = server
    remote = run_remote(f"{art}:head", address, image, preprocessing=PRE)
    local = run_image(art, image, preprocessing=PRE)
    assert [c for c, _, _ in remote.top] == [c for c, _, _ in local.top]
    np.testing.assert_allclose([s for _, s, _ in remote.top], [s for _, s, _ in local.top], rtol=1e-5, atol=1e-6)
    t = remote.timings_ms
    assert set(t) == {"head", "serialize", "transfer", "decode", "tail", "total"} and t["tail"] > 0
    assert t["total"] >= t["head"] + t["serialize"]
    assert remote.sent_bytes < 8 * 16 * 16 * 4 // 2  # int8 codes, not fp32
    assert service.served >= 1
    streamed = run_remote(f"{art}:head", address, image, preprocessing=PRE, repeat=5)
    assert streamed.frames == 5 and [c for c, _, _ in streamed.top] == [c for c, _, _ in remote.top]


def _meta(service, sha=None):
    """What a head of the served split sends (its model hash, or ``sha``, and its connection)."""
    from edgec.flows.serve import LINK_KEY, MODEL_KEY

    return (MODEL_KEY, sha or service.sha), (LINK_KEY, f"{service.fingerprint} 'r1' int8")


def _call(address, payload, meta):
    import grpc

    from edgec.flows.serve import RUN

    with grpc.insecure_channel(address) as channel:
        return channel.unary_unary(RUN)(payload, timeout=10, metadata=meta)


def _huge_header() -> bytes:
    t = onnx.TensorProto(name="r1", data_type=onnx.TensorProto.INT8, dims=[1, 8, 1 << 29, 1 << 29])
    t.raw_data = b"\0" * 16
    return t.SerializeToString()


def _header_without_data() -> bytes:
    t = onnx.TensorProto(name="r1", data_type=onnx.TensorProto.INT8, dims=[1, 8, 16, 16])
    t.raw_data = b"\0" * 100
    return t.SerializeToString()


def test_a_client_that_disconnects_mid_stream_does_not_stop_the_server(split_artifact, server):
    import grpc

    from edgec.flows.serve import STREAM, run_remote

    art, image = split_artifact
    address, service = server
    good = numpy_helper.from_array(np.zeros((1, 8, 16, 16), np.int8), "r1").SerializeToString()
    sent = threading.Event()

    def frames():
        yield good
        sent.wait(10)
        yield good  # never read: the client has gone
        time.sleep(30)

    before = service.served
    channel = grpc.insecure_channel(address)
    call = channel.stream_stream(STREAM)(frames(), timeout=30, metadata=_meta(service))
    assert next(call)  # one answer, then the client goes away mid-stream
    call.cancel()
    sent.set()
    channel.close()
    assert run_remote(f"{art}:head", address, image, preprocessing=PRE, repeat=2).frames == 2
    assert service.served >= before + 3


def test_hostile_requests_get_errors_and_the_server_keeps_serving(split_artifact, server):
    import grpc

    from edgec.flows.serve import run_remote

    art, image = split_artifact
    address, service = server
    meta = _meta(service)
    good = numpy_helper.from_array(np.zeros((1, 8, 16, 16), np.int8), "r1").SerializeToString()
    cases = {
        b"\xff\xfe garbage": grpc.StatusCode.INVALID_ARGUMENT,
        good[: len(good) // 2]: grpc.StatusCode.INVALID_ARGUMENT,  # truncated
        numpy_helper.from_array(np.zeros((1, 8, 8, 8), np.int8), "r1").SerializeToString(): grpc.StatusCode.INVALID_ARGUMENT,
        numpy_helper.from_array(np.zeros((1, 8, 16, 16), np.float32), "r1").SerializeToString():
            grpc.StatusCode.INVALID_ARGUMENT,  # fp32 where int8 codes are expected
        numpy_helper.from_array(np.zeros((1, 8, 16, 16), np.int8), "other").SerializeToString():
            grpc.StatusCode.INVALID_ARGUMENT,
        _huge_header(): grpc.StatusCode.INVALID_ARGUMENT,  # a 2^60-element shape declared, 16 bytes sent
        _header_without_data(): grpc.StatusCode.INVALID_ARGUMENT,  # the right header, too few bytes
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)): grpc.StatusCode.INVALID_ARGUMENT,
    }
    for payload, code in cases.items():
        with pytest.raises(grpc.RpcError) as e:
            _call(address, payload, meta)
        assert e.value.code() == code, e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        _call(address, good, _meta(service, "0" * 64))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "hash" in e.value.details()
    reply = onnx.SequenceProto()
    reply.ParseFromString(_call(address, good, meta))
    assert numpy_helper.to_array(reply.tensor_values[0]).shape == (1, 4)
    assert run_remote(f"{art}:head", address, image, preprocessing=PRE).top
    from edgec.flows.serve import STREAM

    with grpc.insecure_channel(address) as channel:  # a bad frame ends its stream with the reason
        stream = channel.stream_stream(STREAM)(iter([good, b"bad"]), timeout=10, metadata=meta)
        with pytest.raises(grpc.RpcError) as e:
            list(stream)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert run_remote(f"{art}:head", address, image, preprocessing=PRE, repeat=3).frames == 3


def test_the_head_of_another_split_at_the_same_cut_is_refused(split_artifact, server, tmp_path):
    """Same model, same cut tensor, int8 codes of the same shape, but another scale: its codes would decode
    to a wrong tensor and wrong classes, so the tail refuses it (and without the connection's fingerprint:
    a head of an older edgec)."""
    import json

    import grpc

    from edgec.flows.serve import run_remote

    art, image = split_artifact
    address, service = server
    other = tmp_path / "other"
    shutil.copytree(art, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["connections"][0]["encoding"]["scale"] = 2 * manifest["connections"][0]["encoding"]["scale"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=r"different split artifacts of this model") as e:
        run_remote(f"{other}:head", address, image, preprocessing=PRE)
    assert "scale" in str(e.value)
    good = numpy_helper.from_array(np.zeros((1, 8, 16, 16), np.int8), "r1").SerializeToString()
    with pytest.raises(grpc.RpcError) as e:
        _call(address, good, _meta(service)[:1])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "older edgec" in e.value.details()


def test_unreachable_server_and_wrong_parts_are_one_line_errors(split_artifact, run_cli):
    from edgec.flows.serve import run_remote, serve

    art, image = split_artifact
    with pytest.raises(DeviceError, match="cannot be reached"):
        run_remote(f"{art}:head", f"127.0.0.1:{free_port()}", image, preprocessing=PRE, timeout_s=2)
    with pytest.raises(UsageError, match="not a tail"):
        serve(f"{art}:head", free_port())
    with pytest.raises(UsageError, match="not a head"):
        run_remote(f"{art}:tail", "127.0.0.1:1", image, preprocessing=PRE)
    code, out, err = run_cli("run", f"{art}:head", "--server", f"127.0.0.1:{free_port()}", "--image", str(image),
                             "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--timeout", "2")
    assert code == 7 and "cannot be reached" in err and "Traceback" not in err
    code, out, err = run_cli("run", f"{art}:head", "--server", "nohostport", "--image", str(image))
    assert code == 2 and "HOST:PORT" in err
    port = free_port()
    first, _ = serve(f"{art}:tail", port)
    try:  # a second server on a port in use is refused (gRPC would otherwise share it with SO_REUSEPORT)
        with pytest.raises(UsageError, match="in use"):
            serve(f"{art}:tail", port)
    finally:
        first.stop(0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls(split_artifact, tmp_path):
    from edgec.flows.serve import run_remote, serve

    art, image = split_artifact
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    port = free_port()
    srv, service = serve(f"{art}:tail", port, tls_cert=cert, tls_key=key)
    try:
        remote = run_remote(f"{art}:head", f"localhost:{port}", image, preprocessing=PRE, tls_ca=cert)
        assert remote.top
        with pytest.raises(DeviceError):  # plaintext to a TLS server fails cleanly
            run_remote(f"{art}:head", f"localhost:{port}", image, preprocessing=PRE, timeout_s=2)
    finally:
        srv.stop(0)
        service.close()
