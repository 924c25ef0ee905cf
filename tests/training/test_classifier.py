"""The VGG16 classifier trains on synthetic parts in seconds and separates their defects."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from station.sim import DEFECT_TYPES, render_part
from station.vision.align import find_and_align
from station.vision.preprocess import PreprocessSpec, prepare_batch
from training.classifier import (
    ClassifierOptions,
    ClassifierResult,
    Ensemble,
    PretrainedMismatch,
    calibration_tensors,
    train_classifier,
)
from training.classifier.train import train_step
from training.classifier.vgg import VGG16
from training.metrics import roc_auc
from training.synth_defects import synthesize

SIZE = 64
SPEC = PreprocessSpec(size=SIZE)
# the module fixture trains three runs (~75 s, more on a busy machine) in its first test
pytestmark = pytest.mark.timeout(900)


def _crops(seed: int, n: int, defect_every: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Aligned crops of rendered parts; every ``defect_every``-th one has a real defect."""
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for i in range(n):
        defect = None
        if defect_every and i % defect_every == 0:
            defect = DEFECT_TYPES[(i // defect_every) % len(DEFECT_TYPES)]
        part = render_part(rng, (2 * SIZE, 2 * SIZE), defect=defect)
        crops.append(find_and_align(part.image, None, None, SIZE).crop)
        labels.append(int(defect is not None))
    return crops, np.asarray(labels)


def _options(**kw) -> ClassifierOptions:
    """One network unless told (the measurements below are of one network's learning)."""
    base = dict(size=SIZE, width=0.125, dropout=0.0, epochs=13, minutes=5.0, batch_size=16,
                lr=1e-3, seed=0, threads=1, device="cpu", members=1)
    base.update(kw)
    return ClassifierOptions(**base)


# Seeds of the fixture's training runs. float32 training rounds differently on each CPU and
# kernel path (ATEN_CPU_CAPABILITY), so one seed's model is a draw: measured at 26 epochs,
# held-out AUROC 0.83-0.95 per run, and 1 run in 15 collapsed to a constant (0.62: the loss
# jumped back to ln 2 at the peak learning rate). The median of three runs is what the tests
# judge; at 13 epochs single runs spread over 0.63-0.89, on both sides of the old bar.
SEEDS = (0, 1, 2)
EPOCHS = 26


@pytest.fixture(scope="module")
def runs() -> tuple[list[ClassifierResult], list[np.ndarray], np.ndarray]:
    """Three seeds trained on the same crops; validated on held-out parts of every defect type."""
    good, _ = _crops(1, 96, 0)
    real, real_y = _crops(2, 48, 1)
    val, val_y = _crops(3, 40, 2)
    threads = torch.get_num_threads()
    try:
        results = [train_classifier(good + real, np.r_[np.zeros(len(good)), real_y], val, val_y,
                                    SPEC, _options(epochs=EPOCHS, seed=seed), progress=False)
                   for seed in SEEDS]
    finally:
        torch.set_num_threads(threads)
    return results, val, val_y


@pytest.fixture(scope="module")
def trained(runs) -> tuple[ClassifierResult, list[np.ndarray], np.ndarray]:
    """The run with the median held-out AUROC (a typical model, not a lucky or a dead one)."""
    results, val, val_y = runs
    by_auroc = sorted(results, key=lambda r: roc_auc(r.val_p, val_y))
    return by_auroc[len(by_auroc) // 2], val, val_y


@pytest.mark.learning
def test_separates_held_out_defects_clearly_above_chance(runs) -> None:
    results, val, val_y = runs
    for result in results:
        assert result.val_p.shape == (len(val),)
        assert ((result.val_p >= 0) & (result.val_p <= 1)).all()
        assert result.history[-1]["val_auroc"] == pytest.approx(roc_auc(result.val_p, val_y))
        assert result.history[-1]["stopped_by"] == "epochs" and len(result.history) == EPOCHS
    # held-out parts with real (rendered) defects of every type vs held-out good parts:
    # the median run (measured 0.88-0.91 on default, avx2 and avx512 kernels) clears 0.7
    aurocs = [roc_auc(r.val_p, val_y) for r in results]
    assert np.median(aurocs) >= 0.7, aurocs
    # synthesized defects on held-out good parts score above those parts (median run 0.76-0.84)
    assert np.median([r.history[-1]["val_synth_auroc"] for r in results]) > 0.5
    # the loss falls (by 0.17-0.32 in a run that learns, by 0.001 in a collapsed one)
    drops = [r.history[0]["loss"] - r.history[-1]["loss"] for r in results]
    assert np.median(drops) > 0.1, drops


@pytest.mark.learning
def test_exports_to_one_onnx_file_outputting_p_defect(trained, tmp_path: Path) -> None:
    result, val, _ = trained
    model = result.model
    assert not model.training and next(model.parameters()).device.type == "cpu"
    path = tmp_path / "classifier.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, SIZE, SIZE), str(path), dynamo=False,
                      input_names=["image"], output_names=["p_defect"],
                      dynamic_axes={"image": {0: "n"}, "p_defect": {0: "n"}})
    assert [p.name for p in tmp_path.iterdir()] == ["classifier.onnx"]  # self-contained
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (p,) = sess.run(["p_defect"], {"image": prepare_batch(val, SPEC)})
    assert p.shape == (len(val),)
    np.testing.assert_allclose(p, result.val_p, atol=1e-4)


@pytest.mark.learning
def test_exports_with_its_map_through_the_station_api(trained, tmp_path: Path) -> None:
    """What ``station train`` writes: p_defect as before, plus the Grad-CAM map ``cam``."""
    from station.models.inference import ClassifierModel, load_model
    from station.models.metadata import ModelMetadata
    from station.vision.align import AlignParams
    from station.vision.localize import LocalizeParams
    from training.export import export_classifier, over_tolerance, parity

    result, val, _ = trained
    meta = ModelMetadata(kind="classifier", threshold=0.5, preprocess=SPEC.to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict())
    x = prepare_batch(val, SPEC)
    exported, written = export_classifier(result.model, tmp_path / "classifier.onnx", meta,
                                          torch.from_numpy(x[:2]))
    assert written.output_names == ("p_defect", "cam")
    model = load_model(tmp_path / "classifier.onnx", "cpu", 1)
    assert isinstance(model, ClassifierModel) and model.has_map
    p, maps = model.infer_map(x)
    np.testing.assert_allclose(p, result.val_p, atol=1e-4)  # the same scores as before
    assert maps is not None and maps.shape == (len(val), SIZE, SIZE) and (maps >= 0).all()
    # a map peaks at p_defect, unless nothing in the part speaks for a defect (Grad-CAM's
    # ReLU leaves it all zero): measured on 5 (avx512) to 16 (default kernels) of these 40
    # parts, all with p <= 0.31; every part the classifier leans to reject has its map
    peaks = maps.max(axis=(1, 2))
    drawn = peaks > 0
    np.testing.assert_allclose(peaks[drawn], p[drawn], rtol=1e-5)
    assert drawn[p >= 0.5].all() and drawn.any(), np.round(p[~drawn], 2)
    diffs = parity(exported, tmp_path / "classifier.onnx", x)
    assert not over_tolerance(diffs), diffs


@pytest.mark.learning
def test_seeded_and_stops_at_the_time_budget() -> None:
    good, _ = _crops(4, 8, 0)
    opts = _options(width=0.0625, epochs=2, batch_size=4)
    # A process's first training rounds differently from the next ones (by 4e-7 in the first
    # loss, on AVX-512: the CPU kernels are picked on first use), so a run alone in a process
    # fails a comparison of its first two; `station train` trains once per process.
    train_classifier(good, np.zeros(8), good[:4], np.zeros(4), SPEC, opts, progress=False)
    a = train_classifier(good, np.zeros(8), good[:4], np.zeros(4), SPEC, opts, progress=False)
    b = train_classifier(good, np.zeros(8), good[:4], np.zeros(4), SPEC, opts, progress=False)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    np.testing.assert_array_equal(a.val_p, b.val_p)
    c = train_classifier(good, np.zeros(8), [], [], SPEC, _options(
        width=0.0625, epochs=1000, minutes=0.02, batch_size=4), progress=False)
    assert c.history[-1]["stopped_by"] == "time" and len(c.history) < 1000
    assert c.val_p.shape == (0,)


@pytest.mark.learning
def test_members_train_one_after_the_other_and_read_as_one() -> None:
    """Two networks of their own seeds, each stopped at its share of the budget, and
    p_defect their mean logit's."""
    good, _ = _crops(4, 8, 0)
    two = train_classifier(good, np.zeros(8), good[:4], np.zeros(4), SPEC,
                           _options(width=0.0625, epochs=2, batch_size=4, members=2),
                           progress=False)
    assert isinstance(two.model, Ensemble) and len(two.model.members) == 2
    assert [h["member"] for h in two.history] == [0, 0, 1, 1]
    a, b = (m.features[0].weight for m in two.model.members)
    assert not torch.equal(a, b)  # seeds 0 and 1: two networks, not one twice
    x = torch.from_numpy(prepare_batch(good[:4], SPEC))
    with torch.no_grad():
        logits = torch.stack([m.logits(x) for m in two.model.members])
    np.testing.assert_allclose(two.val_p, torch.sigmoid(logits.mean(0)).numpy(), atol=1e-6)
    timed = train_classifier(good, np.zeros(8), [], [], SPEC, _options(
        width=0.0625, epochs=1000, minutes=0.04, batch_size=4, members=2), progress=False)
    rows = timed.history
    assert {h["member"] for h in rows} == {0, 1} and rows[-1]["stopped_by"] == "time"
    first = max(h["seconds"] for h in rows if h["member"] == 0)
    assert first < 0.04 * 60 * 0.75, first  # half of 2.4 s, not all of it


def test_the_training_layout_changes_the_speed_not_what_is_learned() -> None:
    """Networks train channels-last (faster on CPUs, measured by ``station bench``): the same
    weights and batches take the same steps in either layout, to float rounding, and the
    trained network comes back in the plain layout that export and the station expect."""
    good, labels = _crops(6, 8, 2)
    x = torch.from_numpy(prepare_batch(good, SPEC))
    y = torch.from_numpy(labels.astype(np.float32))
    torch.manual_seed(0)
    start = VGG16(_options(width=0.0625).vgg_config(1, True))
    losses, outs = {}, {}
    for name, layout in (("last", torch.channels_last), ("plain", torch.contiguous_format)):
        net = copy.deepcopy(start).to(memory_format=layout).train()
        optim = torch.optim.AdamW(net.parameters(), lr=1e-3)
        losses[name] = [train_step(net, optim, torch.nn.BCEWithLogitsLoss(), x, y,
                                   torch.device("cpu"), layout) for _ in range(3)]
        with torch.no_grad():
            outs[name] = net.eval().logits(x).numpy()
    np.testing.assert_allclose(losses["last"], losses["plain"], rtol=1e-4)
    assert losses["last"][-1] < losses["last"][0]  # the steps learned
    np.testing.assert_allclose(outs["last"], outs["plain"], rtol=1e-3, atol=1e-3)

    trained = train_classifier(good, labels, [], [], SPEC,
                               _options(width=0.0625, epochs=1, batch_size=4), progress=False)
    convs = [m.weight for m in trained.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous() for w in convs)


def test_bad_input_is_refused_with_a_reason() -> None:
    good, _ = _crops(5, 3, 0)
    with pytest.raises(ValueError, match="differs from the preprocessing size"):
        train_classifier(good, np.zeros(3), [], [], SPEC, _options(size=96), progress=False)
    with pytest.raises(ValueError, match="3 training crops but 2 labels"):
        train_classifier(good, np.zeros(2), [], [], SPEC, _options(), progress=False)
    with pytest.raises(ValueError, match="at least 2 good crops"):
        train_classifier(good, np.ones(3), [], [], SPEC, _options(), progress=False)
    with pytest.raises(ValueError, match="0 .good. or 1 .defect."):
        train_classifier(good, [0, 2, 0], [], [], SPEC, _options(), progress=False)
    with pytest.raises(ValueError, match="members must be >= 1, got 0"):
        train_classifier(good, np.zeros(3), [], [], SPEC, _options(members=0), progress=False)


def test_pretrained_weights_need_full_width(tmp_path: Path) -> None:
    good, _ = _crops(5, 3, 0)
    weights = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, weights)
    with pytest.raises(PretrainedMismatch, match="full width"):
        train_classifier(good, np.zeros(3), [], [], SPEC, _options(pretrained=weights),
                         progress=False)


@pytest.mark.learning
def test_synthesized_defects_train_without_any_real_defect() -> None:
    """An engineer with good parts only still gets batches of defects (synthesized)."""
    good, _ = _crops(6, 6, 0)
    d = synthesize(good[0], np.random.default_rng(0))
    assert d.mask.any()
    result = train_classifier(good, np.zeros(6), good[:2] + [d.image], [0, 0, 1], SPEC,
                              _options(width=0.0625, epochs=1, batch_size=4), progress=False)
    assert result.val_p.shape == (3,) and "val_auroc" in result.history[-1]


def test_calibration_tensors_hold_good_and_defective_crops() -> None:
    """int8 ranges must cover defects: half the calibration set is (synthesized) defects."""
    good, _ = _crops(7, 6, 0)
    x = calibration_tensors(good, SPEC, n=8, seed=1)
    assert x.shape == (8, 1, SIZE, SIZE) and x.dtype == np.float32
    np.testing.assert_array_equal(x, calibration_tensors(good, SPEC, n=8, seed=1))
    goods = prepare_batch(good, SPEC)
    matches = [any(np.array_equal(t, g) for g in goods) for t in x]
    assert sum(matches) == 4  # 4 good crops as they are, 4 with synthesized defects
    real, _ = _crops(8, 4, 1)
    y = calibration_tensors(good, SPEC, defect_crops=real, n=8)
    reals = prepare_batch(real, SPEC)
    assert sum(any(np.array_equal(t, r) for r in reals) for t in y) == 2


@pytest.mark.parametrize("flips, left_right, top_bottom", [
    ("none", False, False), ("horizontal", True, False), ("vertical", False, True),
    ("both", True, True)])
def test_training_crops_are_mirrored_only_as_the_recipe_allows(flips, left_right,
                                                              top_bottom) -> None:
    """A screw mirrored is a screw of the wrong handedness: never, unless models.flips says
    the product's mirror image is a good part too; then each allowed axis about half the
    time."""
    from training.classifier import augment

    crop = np.full((40, 32), 200, np.uint8)
    crop[:, :16] = 40  # dark left half
    crop[:20] //= 2  # darker top half
    rng = np.random.default_rng(0)
    seen = [augment(crop, rng, flips) for _ in range(200)]
    mirrored_lr = np.mean([s[:, :16].mean() > s[:, 16:].mean() for s in seen])
    mirrored_tb = np.mean([s[:20].mean() > s[20:].mean() for s in seen])
    assert (0.3 < mirrored_lr < 0.7) if left_right else mirrored_lr == 0
    assert (0.3 < mirrored_tb < 0.7) if top_bottom else mirrored_tb == 0


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_real_defects_are_shown_on_other_good_parts_as_often_as_asked(share: float) -> None:
    """With masks, a ``transplant`` share of the real-defect slots puts the real defect on a
    good crop's surface, so the rest of its own image is not what marks it as defective."""
    from training.classifier import BatchMaker

    striped = np.full((SIZE, SIZE), 60, np.uint8)
    striped[:, ::8] = striped[:, 1::8] = striped[:, 2::8] = striped[:, 3::8] = 120
    good = [striped] * 4  # the good parts' surface: stripes
    real = np.full((SIZE, SIZE), 200, np.uint8)  # the defect's own surface: plain
    mask = np.zeros((SIZE, SIZE), bool)
    mask[28:36, 28:36] = True
    real[mask] = 150
    make = BatchMaker(good, [real], SPEC, np.random.default_rng(0), batch_size=16, n_real=8,
                      masks=[mask], transplant=share)
    slots = np.concatenate([make()[0].numpy()[8:16] for _ in range(25)])  # real-defect slots
    stripes = np.abs(np.diff(slots[:, 0, 4:20, 4:-4], axis=2)).mean(axis=(1, 2))
    on_good = stripes > 0.05
    assert abs(on_good.mean() - share) < 0.15, (on_good.mean(), share)
    # and the defect came along: the pit, 50 levels under its own surface, lies under the
    # darker stripes of its new one
    for s in slots[on_good]:
        assert s[0, 30:34, 30:34].mean() < s[0, 4:20, 4:-4].min()


def test_a_training_written_to_a_log_draws_its_bar_a_few_times(
        capfd: pytest.CaptureFixture[str]) -> None:
    """``station train 2> train.log``: each network's bar is drawn at its start and its end
    (and every half minute between), not at each of its steps."""
    good, _ = _crops(4, 8, 0)
    res = train_classifier(good, np.zeros(8), good[:4], np.zeros(4), SPEC,
                           _options(width=0.0625, epochs=30, batch_size=4, members=2),
                           progress=True)
    log = capfd.readouterr().err
    steps = max(h["steps"] for h in res.history if "steps" in h)
    assert steps >= 30  # a bar redrawn at each step would be drawn that often
    for member in (1, 2):
        draws = log.count(f"classifier {member}/2:")
        assert 2 <= draws <= 3, log
