"""Split computing across a real, rate-limited network link (``tests/split/netns_link.py``): a head in one
network namespace sends its int8 cut through ``tc tbf`` at 1 Mbit/s to ``edgec serve`` in another.

Checked: the classes equal the whole artifact's run here, the bytes sent are the int8 codes, and the
transfer took at least the bytes' time at the link's rate (a physical bound, not a timing tolerance: the
token bucket cannot send faster). Latency predicted against measured per cut is a benchmark:
``benchmarks/bench_split_link.py``. Skips with the reason where namespaces, tc or the cgroups cannot be
set up (not root, a sandbox, one core); removes everything it creates.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import free_port, tiny_cnn
from split.netns_link import EDGEC, open_link, run, run_head, serve

pytestmark = pytest.mark.slow

MBIT = 1.0
CHANNELS, SIZE = 16, 48  # the cut: 16 x 48 x 48 int8 = 36 kB, about 0.3 s at 1 Mbit/s
PRE = ("--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")


@pytest.fixture(scope="module")
def link():
    net, reason = open_link(MBIT)
    if net is None:
        pytest.skip(reason)
    yield net
    net.down()


def _classes(out: str) -> list[str]:
    """Classes in rank order, from `edgec run --server`'s lines ("1. class 3 ...") or `edgec run`'s table."""
    return re.findall(r"^\d+\. class (\d+)", out, re.M) or re.findall(r"│\s*\d+\s*│\s*(\d+)\s*│", out)


def test_head_and_tail_across_a_rate_limited_link(link, tmp_path):
    from PIL import Image

    model = tiny_cnn(tmp_path / "m.onnx", channels=CHANNELS, size=SIZE)
    image = tmp_path / "i.png"
    Image.fromarray((np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype("uint8")).save(image)
    run([EDGEC, "split", str(model), "--at", "r1", "--encoding", "int8", "--out", str(tmp_path), "--name", "s"])
    local = run([EDGEC, "run", str(tmp_path / "s"), "--image", str(image), *PRE])
    port = free_port()
    server = serve(link, tmp_path / "s", port)
    try:
        times, out = run_head(link, tmp_path / "s", port, image, 2, *PRE)
    finally:
        server.terminate()
        server.wait(10)
    assert _classes(out) == _classes(local) and len(_classes(out)) == 4, (out, local)
    sent = int(re.search(r"\((\d+) bytes\)", out).group(1))
    assert CHANNELS * SIZE * SIZE <= sent < CHANNELS * SIZE * SIZE * 1.1  # int8 codes and a small header
    floor_ms = (sent - 1600) * 8 / (MBIT * 1e6) * 1e3  # the bucket's burst (1600 bytes) may go at once
    assert times["transfer"] >= floor_ms, (times, floor_ms)
