"""The digits task's data: an ImageFolder tree with a stratified split, read back as the model sees it."""

import numpy as np

from edgec.frontend.data import accuracy, data_splits, load_image_folder
from edgec.zoo.digits import write_digits_folder


def test_digits_folder_is_a_stratified_imagefolder(tmp_path):
    train_dir, val_dir = write_digits_folder(tmp_path, size=32)
    assert data_splits(tmp_path) == (train_dir, val_dir)
    train = load_image_folder(train_dir, (1, 3, 32, 32), None)
    val = load_image_folder(val_dir, (1, 3, 32, 32), None, limit=50)
    assert len(train) == 1437 and len(val) == 50 and train.x.shape == (1437, 3, 32, 32)
    assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
    counts = np.bincount(train.labels, minlength=10)
    from sklearn.datasets import load_digits

    share = 0.8 * np.bincount(load_digits().target, minlength=10)  # stratified: each digit keeps 80%
    assert np.all(np.abs(counts - share) <= 1)
    assert np.allclose(train.x[:, 0], train.x[:, 2])  # grey digits as RGB
    assert accuracy(np.eye(10)[train.labels], train.labels) == 1.0
    assert 0 < val.jpeg_q90_bytes(limit=5) < 4096


def test_zoo_digits_refuses_a_non_empty_folder(tmp_path, run_cli):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_cli("zoo", "digits", str(tmp_path))
    assert code == 2 and "not empty" in err and (tmp_path / "keep.txt").read_text() == "mine"
    code, _, err = run_cli("zoo", "digits", str(tmp_path / "new"), "--epochs", "0")
    assert code == 2 and not (tmp_path / "new").exists()


def test_an_onnx_file_can_record_its_preprocessing(tmp_path):
    """`edgec zoo digits` records RGB in [0, 1] in the file; a build of the file then preprocesses so."""
    import json

    import onnx

    from conftest import tiny_cnn
    from edgec.flows.build import BuildOptions
    from edgec.flows.lower import load_source
    from edgec.frontend.image import PREPROCESSING_KEY

    path = tiny_cnn(tmp_path / "m.onnx")
    assert load_source(BuildOptions(model=str(path))).preprocessing is None
    model = onnx.load(path)
    pre = {"resize": [16, 16], "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1], "layout": "NCHW"}
    onnx.helper.set_model_props(model, {PREPROCESSING_KEY: json.dumps(pre)})
    onnx.save(model, path)
    assert load_source(BuildOptions(model=str(path))).preprocessing == pre
    onnx.helper.set_model_props(model, {PREPROCESSING_KEY: '{"std": [0, 0, 0]}'})  # broken: ignored
    onnx.save(model, path)
    assert load_source(BuildOptions(model=str(path))).preprocessing is None


def test_omp_threads_wait_passively_unless_the_user_says_otherwise():
    """Two OpenMP threads spinning at each barrier on a shared 2-core machine made `edgec zoo digits` take 18 min
    instead of about a minute: importing edgec (before torch loads libgomp) makes them wait sleeping."""
    import os
    import subprocess
    import sys

    code = "import edgec, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["PASSIVE", "False"]  # set before anything could load torch's libgomp
    run = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["ACTIVE", "False"]  # the user's own is kept
