"""Split computing at run time over gRPC: ``edgec serve ARTIFACT:tail`` and ``edgec run ARTIFACT:head --server``.

The head runs on the device and sends the cut tensor; a server runs the tail. The transport is
gRPC (``grpcio``: HTTP/2 framing, deadlines, optional TLS); no code generation is needed because
the messages are ONNX's own protobufs: a request is one serialized ``onnx.TensorProto`` (the cut
tensor under its name, encoded as the artifact's connection says: fp32, or int8 codes), a reply is
an ``onnx.SequenceProto`` of the tail's outputs. Request metadata carries the artifact's model hash;
the server refuses another model's head (``FAILED_PRECONDITION``), a tensor of the wrong name, shape
or dtype, and bytes that do not parse (``INVALID_ARGUMENT``), and keeps serving. The reply's last
tensor gives its decode and tail times (ms), so the client splits a request into head, serialise,
transfer, decode, tail and total.

Service ``edgec.split.v1.Tail``: ``Run`` (unary) and ``RunStream`` (bidirectional: one reply per
request, for a stream of frames). Source of the split-computing setting:
Matsubara et al., "Split Computing and Early Exiting for Deep Learning Applications: Survey and
Research Challenges", ACM Computing Surveys 2022, section 2.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.artifact import Artifact, Part, open_part
from edgec.errors import DeviceError, EdgecError, UsageError
from edgec.split.encoding import CutEncoding

# gRPC's own native log lines (``E... add_port.cc:...``) would precede edgec's one-line errors; it reads
# this when its core starts, so it is set before any ``import grpc``. An explicit GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

SERVICE = "edgec.split.v1.Tail"
RUN = f"/{SERVICE}/Run"
STREAM = f"/{SERVICE}/RunStream"
MODEL_KEY = "edgec-model-sha256"
#: The head's connection: ``<fingerprint> <encoding in words>`` (:meth:`CutEncoding.fingerprint`).
LINK_KEY = "edgec-link"
#: The reply's last tensor: the server's decode and tail times (ms, float64).
SERVER_MS = "__edgec_server_ms"


class Refused(Exception):
    """A request the tail does not run: a gRPC status code name and the reason."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details
#: Largest message accepted (bytes): cut tensors of vision models are far smaller.
MAX_MESSAGE_BYTES = 64 << 20


def _link(artifact: Artifact, part: Part, side: str) -> dict[str, Any]:
    """The connection ``part`` is the receiving end of (``side="to"``: a tail) or the sending end of
    (``side="from"``: a head).

    Raises:
        UsageError: the part is not that end of any connection.
    """
    link = next((c for c in artifact.connections if c[side]["part"] == part.name), None)
    if link is None:
        role, fix = (("a tail", f"serve the part fed by the head, e.g. edgec serve {artifact.folder}:tail")
                     if side == "to" else
                     ("a head", f"run the head: edgec run {artifact.folder}:head --server HOST:PORT --image X"))
        raise UsageError(f"part '{part.name}' of {artifact.folder} is not {role}", fix)
    return link


def _wire_dtype(encoding: CutEncoding) -> np.dtype:
    return np.dtype(np.float32) if encoding.kind == "fp32" else np.dtype(encoding.to_dict().get("dtype", "int8"))


class TailService:
    """The tail of a split artifact, ready to answer requests (one at a time on the TVM VM).

    Raises:
        UsageError: not a multi-part artifact's tail, or a tail built for another machine.
        ModelError: the tail's library is missing or damaged.
    """

    def __init__(self, ref: str | Path, threads: int | None = None) -> None:
        from edgec.devices.local import LocalDevice
        from edgec.flows.run import require_local

        self.artifact, part = open_part(ref)
        if part is None:
            raise UsageError(f"{ref} has several parts; name the tail", f"edgec serve {ref}:tail --port 50051")
        self.part = part
        require_local(part, self.artifact)
        part.check_library()
        self.link = _link(self.artifact, part, "to")
        self.encoding = CutEncoding.from_dict(self.link.get("encoding") or {})
        spec = next(t for t in part.inputs if t["name"] == self.link["to"]["tensor"])
        self.tensor = self.link["from"]["tensor"]
        self.shape = list(spec["shape"])
        self.wire_dtype = _wire_dtype(self.encoding)
        self.sha = self.artifact.manifest["model"].get("source_sha256")
        self.fingerprint = self.encoding.fingerprint(self.link)
        self._device_cm = LocalDevice(threads).open()
        self.session = self._device_cm.__enter__()
        self.main = self.session.load_model(part.library)["main"]
        self.lock = threading.Lock()
        self.served = 0

    def answer(self, request: bytes, meta: dict[str, str]) -> bytes:
        """One request: check, parse, decode, run the tail; the reply (a serialized ``onnx.SequenceProto``).

        Raises:
            Refused: the request is another model's, malformed, or the wrong tensor (``code``, ``details``).
        """
        from edgec.devices.session import flatten

        if meta.get(MODEL_KEY) != self.sha:
            raise Refused("FAILED_PRECONDITION",
                          f"model hash mismatch: this tail serves {str(self.sha)[:12]}, the head sent "
                          f"{str(meta.get(MODEL_KEY))[:12]}; run the head of the same artifact")
        theirs, _, how = str(meta.get(LINK_KEY, "")).partition(" ")
        if theirs != self.fingerprint:
            raise Refused("FAILED_PRECONDITION",
                          f"the head sends the cut {how or 'in an unknown way (an older edgec)'} and this tail "
                          f"takes {self.link['to']['tensor']!r} {self.encoding.describe()}: they come from different "
                          "split artifacts of this model; run the head of the same artifact")
        start = time.perf_counter()
        tensor = onnx.TensorProto()
        try:
            tensor.ParseFromString(request)
        except Exception as e:  # noqa: BLE001  any malformed or truncated payload
            raise Refused("INVALID_ARGUMENT",
                          f"malformed request: not a serialized onnx.TensorProto ({type(e).__name__})") from None
        wire = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.wire_dtype))
        if tensor.name != self.tensor or list(tensor.dims) != self.shape or tensor.data_type != wire:
            # refused on the declared header, before any array of a (maybe huge) declared shape is made
            got = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) if tensor.data_type in (
                onnx.helper.get_all_tensor_dtypes()) else f"dtype {tensor.data_type}"
            raise Refused("INVALID_ARGUMENT",
                          f"wrong tensor: got {tensor.name!r} {list(tensor.dims)[:8]} {got}, this tail takes "
                          f"{self.tensor!r} {self.shape} {self.wire_dtype} ({self.encoding.kind})")
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as e:  # noqa: BLE001  a header that promises more data than came
            raise Refused("INVALID_ARGUMENT",
                          f"malformed request: the tensor's data does not fit its shape ({type(e).__name__})") from None
        x = self.encoding.decode(array) if self.encoding.kind != "fp32" else array
        decoded = time.perf_counter()
        with self.lock:
            outs = flatten(self.main(*self.session.tensors([np.ascontiguousarray(x, np.float32)])))
            self.served += 1
        done = time.perf_counter()
        reply = onnx.SequenceProto(name="outputs", elem_type=onnx.SequenceProto.TENSOR)
        for spec, out in zip(self.part.manifest["outputs"], outs):
            reply.tensor_values.append(numpy_helper.from_array(out, spec["name"]))
        reply.tensor_values.append(numpy_helper.from_array(
            np.array([(decoded - start) * 1e3, (done - decoded) * 1e3]), SERVER_MS))
        return reply.SerializeToString()

    def handle(self, request: bytes, context) -> bytes:
        """gRPC unary handler of :meth:`answer`."""
        import grpc

        try:
            return self.answer(request, dict(context.invocation_metadata()))
        except Refused as e:
            context.abort(getattr(grpc.StatusCode, e.code), e.details)

    def handle_stream(self, requests, context):
        """gRPC stream handler: one reply per request, in order (frames of a video); a refused
        request ends the stream with its reason."""
        import grpc

        meta = dict(context.invocation_metadata())
        for request in requests:
            try:
                yield self.answer(request, meta)
            except Refused as e:
                context.abort(getattr(grpc.StatusCode, e.code), e.details)

    def close(self) -> None:
        self._device_cm.__exit__(None, None, None)


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the {what} {path}: {e.strerror}", "give a PEM file") from None
    if b"-----BEGIN " not in data:  # gRPC would fail later, and say something else (a port in use, unreachable)
        raise UsageError(f"the {what} {path} is not a PEM file (no '-----BEGIN' line)", "give a PEM file")
    return data


def _bind_failure(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on, as the OS says it (gRPC's own reason is only in its log)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return "not an address of this machine"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind(sockaddr)
        except OSError as e:
            return e.strerror or str(e)
    return "in use, or not an address of this machine"


def serve(ref: str | Path, port: int, host: str = "127.0.0.1", *, tls_cert: Path | None = None,
          tls_key: Path | None = None, threads: int | None = None, workers: int = 4):
    """Start serving ``ARTIFACT:tail``; returns ``(grpc.Server, TailService)`` (stop with ``server.stop(0)``).

    Raises:
        UsageError: see :class:`TailService`; the address cannot be bound; only one of the TLS files.
    """
    import grpc

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("TLS needs both --tls-cert and --tls-key", "give both PEM files, or neither")
    service = TailService(ref, threads)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                                  ("grpc.so_reuseport", 0)])  # a port in use is an error, not a shared port
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Run": grpc.unary_unary_rpc_method_handler(service.handle),
        "RunStream": grpc.stream_stream_rpc_method_handler(service.handle_stream)})
    server.add_generic_rpc_handlers((handler,))
    address = f"{host}:{port}"
    try:
        if tls_cert is not None:
            creds = grpc.ssl_server_credentials([(_read(tls_key, "TLS key"), _read(tls_cert, "TLS certificate"))])
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        service.close()
        why = _bind_failure(host, port)
        fix = ("choose another --port (another program listens on this one)" if "in use" in why.lower() else
               "--bind an address of this machine (0.0.0.0: every interface), or choose another --port")
        raise UsageError(f"cannot listen on {address} ({why})", fix)
    server.start()
    return server, service


@dataclass
class RemoteResult:
    """What ``edgec run ARTIFACT:head --server`` got back.

    Attributes:
        top: ``[(class, softmax score, label or None)]`` of the last frame answered.
        timings_ms: Median over the frames of ``head``, ``serialize``, ``transfer`` (the round trip minus
            the server's work), ``decode``, ``tail`` (timed by the server) and ``total`` (ms).
        sent_bytes: Bytes of one request payload.
        frames: Frames answered (one, or up to ``repeat`` over one stream).
        requested: Frames asked for (``repeat``).
        error: Why a stream ended before ``requested`` frames (the figures are then those of the frames
            answered before it); None when every frame was answered.
        weights: The model's weights' origin (``"random"`` for a zoo model without its checkpoint).
        interrupted: Ctrl-C ended the stream (the figures are those of the frames answered before it).
    """

    top: list[tuple[int, float, str | None]]
    timings_ms: dict[str, float] = field(default_factory=dict)
    sent_bytes: int = 0
    frames: int = 1
    requested: int = 1
    error: EdgecError | None = None
    weights: str | None = None
    interrupted: bool = False


#: Server status codes that refuse a request (the head and tail do not match): a usage error, not a link failure.
_REFUSALS = ("INVALID_ARGUMENT", "FAILED_PRECONDITION")


def _connection_error(e, server: str, artifact: Artifact, timeout_s: float, *, frame: int | None = None,
                      expired: bool = False) -> Exception:
    """The edgec error of a failed ``Run`` or ``RunStream`` call ``e`` (a ``grpc.RpcError``).

    ``frame``: the stream's frame (1-based) that failed, None for a single request; ``expired``: the
    per-frame deadline cancelled the stream. Returns a :class:`UsageError` for a request the server
    refused, else a :class:`DeviceError` (no answer within ``timeout_s`` seconds, unreachable, the
    connection lost mid-stream, any other gRPC failure).
    """
    import grpc

    code = e.code()
    details = " ".join(str(e.details() or "").split())
    what = f"frame {frame}" if frame else "the request"
    if expired or code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeviceError(f"the tail server at {server} did not answer {what} within {timeout_s:g} s",
                           "raise --timeout (seconds per frame), or check the link and the server's load")
    if code is not None and code.name in _REFUSALS:
        return UsageError(f"the tail server refused the request: {details}",
                          "run the head and the tail of the same artifact")
    port = server.rsplit(":", 1)[-1]
    if code == grpc.StatusCode.UNAVAILABLE and (frame or 1) == 1:
        return DeviceError(f"the tail server at {server} cannot be reached",
                           f"start it: edgec serve {artifact.folder}:tail --port {port}; "
                           "check the address, the firewall, and TLS on both sides")
    name = code.name if code is not None else "UNKNOWN"
    return DeviceError(f"the connection to the tail server at {server} failed at {what} ({name}: {details})",
                       f"check that the server still runs (edgec serve {artifact.folder}:tail --port {port}) "
                       "and the link")


class _FrameStream:
    """One ``RunStream`` call driven frame by frame from the calling thread, with a deadline per frame.

    :meth:`exchange` sends one request and returns its reply. The call itself has no deadline: a
    watchdog thread cancels it once a reply is more than ``timeout_s`` seconds late (``expired`` is
    then True), so a stream may last any number of frames. The requests reach gRPC through a queue,
    so gRPC's request thread runs no edgec code (the head runs in the caller's thread); :meth:`close`
    ends that iterator, cancels the call, and joins the watchdog and gRPC's request thread, so no
    thread is left inside gRPC or TVM when the interpreter exits (a thread caught in native code
    there aborts the process: ``terminate called without an active exception``).
    """

    #: How long :meth:`close` waits for gRPC's request thread to finish (s); it has only to see the end marker.
    JOIN_S = 10.0

    def __init__(self, channel, metadata, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.expired = False
        self._requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None  # gRPC's thread reading the requests
        self._cond = threading.Condition()
        self._deadline: float | None = None  # time.monotonic() by which the pending reply is due
        self._closed = False
        self._call = channel.stream_stream(STREAM)(self._iterate(), metadata=metadata)
        self._watchdog = threading.Thread(target=self._watch, name="edgec-frame-deadline", daemon=True)
        self._watchdog.start()

    def _iterate(self):
        self._feeder = threading.current_thread()
        while (request := self._requests.get()) is not None:
            yield request

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                elif (left := self._deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                else:
                    self._deadline, self.expired = None, True
                    self._call.cancel()

    def exchange(self, request: bytes) -> bytes:
        """Send one request, return its reply.

        Raises:
            grpc.RpcError: the call failed, or was cancelled because the reply was late (``expired``).
            DeviceError: the server ended the stream without answering.
        """
        with self._cond:
            self._deadline = time.monotonic() + self.timeout_s
            self._cond.notify()
        self._requests.put(request)
        try:
            return next(self._call)
        except StopIteration:
            raise DeviceError("the tail server ended the stream before answering every frame",
                              "check the server's log") from None
        finally:
            with self._cond:
                self._deadline = None

    def close(self) -> None:
        """End the requests, cancel the call (a no-op once it has ended) and join the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._requests.put(None)
        self._call.cancel()
        self._watchdog.join()
        feeder = self._feeder
        if feeder is not None and feeder is not threading.current_thread():
            feeder.join(self.JOIN_S)


def run_remote(ref: str | Path, server: str, image: str | Path, *, top: int = 5, timeout_s: float = 10.0,
               tls_ca: Path | None = None, preprocessing: dict | None = None, repeat: int = 1,
               on_frame: Callable[[int, int], None] | None = None) -> RemoteResult:
    """Run the head of a split artifact here on ``image`` and the tail on ``server`` (``HOST:PORT``).

    With ``repeat`` > 1 the frames go over one bidirectional stream (``RunStream``) in lock-step (a
    frame's head runs once the previous frame is answered), so each frame's times are its own, as
    one inference's latency. ``timeout_s`` (seconds) is the deadline of each request: of each frame's
    reply on a stream, however long the whole stream lasts. ``on_frame(answered, repeat)`` is called
    after each answered frame (progress).

    A stream that fails after some frames were answered (a late reply, a lost connection) is not
    thrown away: the result holds those frames' figures and the failure in ``error`` (or ``interrupted``
    for a Ctrl-C).

    Raises:
        UsageError: not a head, a bad image, a request the server refused (its reason).
        DeviceError: the server cannot be reached, did not answer the first request within
            ``timeout_s``, or the connection failed (the server stopped, the link broke) before any
            frame was answered.
    """
    import grpc

    from edgec.devices.local import LocalDevice
    from edgec.devices.session import flatten
    from edgec.flows.run import image_tensor, rank_scores, require_local

    if repeat < 1:
        raise UsageError(f"--repeat {repeat} must be at least 1", "e.g. --repeat 20")
    artifact, part = open_part(ref)
    if part is None:
        raise UsageError(f"{ref} has several parts; name the head", f"edgec run {ref}:head --server {server}")
    require_local(part, artifact)
    part.check_library()
    link = _link(artifact, part, "from")
    encoding = CutEncoding.from_dict(link.get("encoding") or {})
    x, _ = image_tensor(artifact, part, image, preprocessing)
    names = [o["name"] for o in part.manifest["outputs"]]
    metadata = ((MODEL_KEY, artifact.manifest["model"].get("source_sha256") or ""),
                (LINK_KEY, f"{encoding.fingerprint(link)} {link['from']['tensor']!r} {encoding.describe()}"))
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    credentials = grpc.ssl_channel_credentials(_read(tls_ca, "TLS CA certificate")) if tls_ca else None
    steps: list[dict[str, float]] = []
    replies: list[bytes] = []
    payload = b""
    failure: EdgecError | None = None
    interrupted = False
    with LocalDevice().open() as session:
        main = session.load_model(part.library)["main"]
        args = session.tensors([x])
        main(*args)  # warm-up: loading and the first call are not the head's latency

        def head() -> bytes:  # one frame's request, in this thread; its times go to steps
            nonlocal payload
            t0 = time.perf_counter()
            cut = dict(zip(names, flatten(main(*args))))[link["from"]["tensor"]]
            t1 = time.perf_counter()
            wire = encoding.encode(cut) if encoding.kind != "fp32" else np.ascontiguousarray(cut, np.float32)
            payload = numpy_helper.from_array(np.asarray(wire), link["from"]["tensor"]).SerializeToString()
            t2 = time.perf_counter()
            steps.append({"start": t0, "head": (t1 - t0) * 1e3, "serialize": (t2 - t1) * 1e3, "sent": t2})
            return payload

        channel = (grpc.secure_channel(server, credentials, options=options) if credentials is not None
                   else grpc.insecure_channel(server, options=options))
        stream = None
        try:
            if repeat == 1:
                request = head()
                replies.append(channel.unary_unary(RUN)(request, timeout=timeout_s, metadata=metadata))
                steps[0]["done"] = time.perf_counter()
            else:
                stream = _FrameStream(channel, metadata, timeout_s)
                for _ in range(repeat):
                    reply = stream.exchange(head())
                    steps[-1]["done"] = time.perf_counter()
                    replies.append(reply)
                    if on_frame is not None:
                        on_frame(len(replies), repeat)
        except (grpc.RpcError, DeviceError) as e:
            failure = e if isinstance(e, DeviceError) else _connection_error(
                e, server, artifact, timeout_s, frame=len(replies) + 1 if stream else None,
                expired=stream is not None and stream.expired)
            if not replies or isinstance(failure, UsageError):
                raise failure from None
        except KeyboardInterrupt:  # Ctrl-C mid-stream: the frames answered so far are reported, then 130
            if not replies:
                raise
            interrupted = True
        finally:
            if stream is not None:
                stream.close()
            channel.close()
    timings = []
    for step, reply in zip(steps, replies):
        seq = onnx.SequenceProto()
        seq.ParseFromString(reply)
        decode, tail = (float(v) for v in numpy_helper.to_array(seq.tensor_values[-1]))
        timings.append({"head": step["head"], "serialize": step["serialize"],
                        "transfer": max(0.0, (step["done"] - step["sent"]) * 1e3 - decode - tail),
                        "decode": decode, "tail": tail, "total": (step["done"] - step["start"]) * 1e3})
    scores = numpy_helper.to_array(seq.tensor_values[0])
    median = {k: float(np.median([t[k] for t in timings])) for k in timings[0]}
    return RemoteResult(rank_scores(artifact, "tail", scores, top), median, len(payload), len(replies), repeat,
                        failure, artifact.manifest["model"].get("weights"), interrupted)
