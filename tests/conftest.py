"""Suite-wide settings: Qt runs offscreen, and nothing here depends on ../shared data."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning starves the rest.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's
    spinning threads slow them down many times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Small autoencoder + classifier trained once per session on synthetic parts (~30 s).

    The real training code (``training.train``) on a tiny synthetic MVTec-layout set, so
    the runtime and GUI tests drive real onnxruntime sessions on real exported models.
    """
    from station.sim import write_mvtec_dataset
    from training.autoencoder import AutoencoderOptions
    from training.train import TrainOptions, train

    root = tmp_path_factory.mktemp("tiny_models")
    data = write_mvtec_dataset(root / "data", n_train_good=40, n_test_good=8,
                               n_test_per_defect=4, size=160, seed=3)
    out = root / "models"
    train(TrainOptions(data=data, out=out, size=64, cls_size=64, width=0.0625, minutes=0.25,
                       progress=False, int8=False,
                       ae=AutoencoderOptions(base_channels=8, max_channels=32, latent_channels=8)))
    return out


# The defect kind a model trained in half a minute catches every time on the simulated line
# (p_defect saturates); subtler kinds (a broken tip the length-normalized crop stretches
# back, a faint scratch) need the real training budget.
LINE_DEFECTS = ("contamination",)


@pytest.fixture(scope="session")
def line_defects() -> tuple[str, ...]:
    """The defect kinds ``line_models`` was trained to catch (the simulator renders these)."""
    return LINE_DEFECTS


@pytest.fixture(scope="session")
def line_models(tmp_path_factory) -> Path:
    """A classifier that tells ``LINE_DEFECTS`` from good parts (probed on 120 conveyor parts:
    contamination 1.03–1.06, good parts at most 0.60, 1.0 = threshold), trained
    once per session by ``training.train`` (~40 s) with half the data set's defect photos
    (2-fold split): the end-to-end line test checks every verdict against the conveyor's
    ground truth with it. Its threshold comes from the training run's own validation
    images, never from the line test.
    """
    from station.sim import write_mvtec_dataset
    from training.train import TrainOptions, train

    root = tmp_path_factory.mktemp("line_models")
    data = write_mvtec_dataset(root / "data", n_train_good=80, n_test_good=12,
                               n_test_per_defect=12, size=160, seed=21, defects=LINE_DEFECTS)
    out = root / "models"
    # A fixed number of epochs, not a time budget: the same model on a fast or a busy machine.
    train(TrainOptions(data=data, out=out, only="classifier", cls_size=64, width=0.125,
                       epochs=60, minutes=4.0, folds=2, fold=0, progress=False, int8=False))
    return out
