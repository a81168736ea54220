"""Accuracy of a split deployment on labelled images (``edgec split ... --data DIR``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from edgec.frontend import reference
from edgec.frontend.data import ImageSet, accuracy
from edgec.frontend.load import graph_inputs
from edgec.split.encoding import CutEncoding


def head_outputs(head: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """The head's single output on each image, stacked: ``(N, ...)`` float32 (onnxruntime, batch 1 each).

    Args:
        head: A model with one input of batch 1 and one output.
        images: ``(N, ...)``, one row per input of the head.
    """
    session = reference.ort_session(head)
    name = graph_inputs(head)[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))], axis=0)


def task_accuracy(whole: onnx.ModelProto, head: onnx.ModelProto, tail: onnx.ModelProto,
                  encoding: CutEncoding | None, data: ImageSet, source: str) -> dict[str, Any]:
    """Top-1 accuracy of ``whole`` and of head -> encoding -> tail on ``data``, in onnxruntime.

    Args:
        whole: The unsplit model (one image input, ``(1, classes)`` scores first output).
        head, tail: The parts (the tail's first input is the head's output).
        encoding: How the cut travels (None: fp32).
        data: Preprocessed labelled images.
        source: The folder the images came from (recorded).

    Returns:
        The report's ``function_change.task`` record: ``images``, ``accuracy_whole``,
        ``accuracy_split``, ``top1_agreement`` (fractions), ``bytes_sent`` per image, and the
        mean ``jpeg_q90_bytes`` of the images with ``bytes_saved_vs_jpeg`` (a fraction).
    """
    whole_s, tail_s = reference.ort_session(whole), reference.ort_session(tail)
    whole_in, tail_in = graph_inputs(whole)[0].name, graph_inputs(tail)[0].name
    sent = head_outputs(head, data.x)
    ref, got = [], []
    for i in range(len(data)):
        ref.append(whole_s.run(None, {whole_in: data.x[i:i + 1]})[0].reshape(-1))
        cut = sent[i:i + 1] if encoding is None else encoding.roundtrip(sent[i:i + 1])
        got.append(tail_s.run(None, {tail_in: cut})[0].reshape(-1))
    ref_a, got_a = np.stack(ref), np.stack(got)
    per_image = int(np.prod(sent.shape[1:])) * (4 if encoding is None else encoding.bytes_per_element)
    jpeg = data.jpeg_q90_bytes()
    return {"data": source, "images": len(data), "accuracy_whole": accuracy(ref_a, data.labels),
            "accuracy_split": accuracy(got_a, data.labels),
            "top1_agreement": float(np.mean(ref_a.argmax(-1) == got_a.argmax(-1))),
            "bytes_sent": per_image, "jpeg_q90_bytes": jpeg,
            "bytes_saved_vs_jpeg": 1.0 - per_image / jpeg if jpeg else 0.0}
