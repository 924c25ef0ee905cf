"""``station evaluate`` as a line engineer reads it: per defect type recall and AUROC, the
gallery of each type's best and worst part with every model's map, and the int8 rule
checked on the evaluated images (tiny real models, a synthetic data set they never saw)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from station.cli import main
from station.models.inference import load_model
from station.sim import write_mvtec_dataset
from station.sources.datasets import read_dataset
from station.vision.preprocess import prepare_batch
from training.data import compute_crops
from training.export import float_nodes, write_metadata
from training.quantize import quantize_static
from training.report import DPI, TITLE_INCHES

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.learning]
KINDS = ("autoencoder", "classifier", "fused")


def pairwise_auroc(pos: list[float], neg: list[float]) -> float:
    """AUROC by its definition: the share of (defect, good) pairs ranked right, ties half."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


@pytest.fixture(scope="module")
def folder(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the tiny models (tests may add and prune int8 copies) and a data set they
    never saw: 3 parts of every defect type, 6 + 2 good ones."""
    base = tmp_path_factory.mktemp("evaluate")
    models = base / "models"
    models.mkdir()
    for name in ("autoencoder.onnx", "classifier.onnx", "recipe_fragment.toml", "split.json"):
        shutil.copy(tiny_models / name, models / name)
    data = write_mvtec_dataset(base / "data", n_train_good=2, n_test_good=6,
                               n_test_per_defect=3, size=160, seed=77)
    return models, data


@pytest.fixture(scope="module")
def evaluated(folder, tmp_path_factory) -> tuple[dict, str, Path]:
    """One evaluation with the report: (the JSON, what the command printed, report folder)."""
    models, data = folder
    out = tmp_path_factory.mktemp("report")
    js = out / "eval.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["evaluate", "--models", str(models), "--data", str(data), "--json", str(js),
                   "--report", str(out / "report"), "--good-from-train", "--quiet"])
    assert rc == 0
    return json.loads(js.read_text()), buf.getvalue(), out / "report"


def test_per_type_recall_and_auroc_match_a_hand_computation(evaluated):
    result, printed, report = evaluated
    rows = result["per_image"]
    assert all(r[k] is not None for r in rows for k in KINDS), "every part was found"
    types = sorted({r["defect_type"] for r in rows if r["label"] == 1})
    assert len(types) >= 5
    good = [r for r in rows if r["label"] == 0]
    for kind in KINDS:
        by_type = result[kind]["per_defect_type"]
        for t in types:
            mine = [r for r in rows if r["defect_type"] == t]
            rejected = [r["verdict"] == "REJECT" if kind == "fused" else r[kind] >= 1.0
                        for r in mine]
            assert by_type[t]["n"] == len(mine) == 3
            assert by_type[t]["recall"] == pytest.approx(np.mean(rejected))
            assert by_type[t]["image_auroc"] == pytest.approx(
                pairwise_auroc([r[kind] for r in mine], [r[kind] for r in good]))
        false_rej = [r["verdict"] == "REJECT" if kind == "fused" else r[kind] >= 1.0
                     for r in good]
        assert by_type["good"]["false_reject_rate"] == pytest.approx(np.mean(false_rej))
    # the printed table: one line per type, each model's recall / AUROC in it
    lines = {line.split()[0]: line for line in printed.splitlines() if line.split()}
    for t in types:
        for kind in KINDS:
            b = result[kind]["per_defect_type"][t]
            assert f"{b['recall']:.3f} / {b['image_auroc']:.3f}" in lines[t], (t, kind)
    assert (report / "per_type.png").stat().st_size > 1000


def test_every_map_gets_pixel_metrics_overall_and_per_type(evaluated):
    result, _, _ = evaluated
    types = {r["defect_type"] for r in result["per_image"] if r["label"] == 1}
    # training exports the classifier with its class activation map
    assert result["autoencoder"]["has_map"] and result["classifier"]["has_map"]
    for kind in ("autoencoder", "classifier"):
        block = result[kind]
        assert 0.0 <= block["pixel_auroc"] <= 1.0 and 0.0 <= block["aupro"] <= 1.0
        for t in types:
            assert 0.0 <= block["per_defect_type"][t]["pixel_auroc"] <= 1.0, (kind, t)
            assert 0.0 <= block["per_defect_type"][t]["aupro"] <= 1.0, (kind, t)


def test_gallery_has_one_row_per_type_with_each_models_map(evaluated, folder):
    result, _, report = evaluated
    rows = result["per_image"]
    types = sorted({r["defect_type"] for r in rows if r["label"] == 1})
    assert [g["defect_type"] for g in result["gallery"]] == types
    for g in result["gallery"]:
        fused = {r["path"]: r["fused"] for r in rows if r["defect_type"] == g["defect_type"]}
        assert g["best_fused"] == max(fused.values()) == fused[g["best_path"]]
        assert g["worst_fused"] == min(fused.values()) == fused[g["worst_path"]]
        assert rows[g["best"]]["path"] == g["best_path"]
    png = cv2.imread(str(report / "defect_gallery.png"))
    maps = sum(1 for k in ("autoencoder", "classifier") if result[k]["has_map"])
    # a row per type, as tall as the tallest crop at its aspect under two lines of title;
    # per part its crop and one panel per model map, best then worst
    specs = [load_model(folder[0] / f"{k}.onnx", "cpu").meta.preprocess_spec()
             for k in ("autoencoder", "classifier")]
    row = 2.3 * max(s.crop_height / s.size for s in specs) + TITLE_INCHES
    assert png.shape[0] == pytest.approx(row * len(types) * DPI, abs=2)
    assert png.shape[1] == pytest.approx(2.3 * 2 * (1 + maps) * DPI, abs=2)


def _crops(models: Path, data: Path, kind: str) -> np.ndarray:
    """The model's prepared crops of every test image."""
    model = load_model(models / f"{kind}.onnx", "cpu")
    spec = model.meta.preprocess_spec()
    samples = [s for s in read_dataset(data) if s.split == "test"]
    crops = compute_crops(samples, model.meta.localize_params(), model.meta.align_params(),
                          spec.size, None, progress=False)
    return prepare_batch(list(crops.crops), spec)


def _normalized(model, x: np.ndarray) -> np.ndarray:
    raw = model.infer(x)
    return np.asarray(model.normalized(raw[1] if model.kind == "autoencoder" else raw))


def _middle_split(scores: np.ndarray) -> float:
    """A threshold between two distinct scores, as near the median as they allow."""
    v = np.unique(scores.astype(np.float64))
    assert len(v) > 1, "the classifier gives every part the same score"
    i = min(range(len(v) - 1), key=lambda j: abs(j + 0.5 - (len(v) - 1) / 2))
    return float((v[i] + v[i + 1]) / 2)


def test_int8_copies_failing_the_rule_are_pruned_and_others_kept(folder, tmp_path, capsys):
    trained, data = folder
    models = tmp_path / "models"
    shutil.copytree(trained, models)
    # A half-minute classifier may pass every part (its budget is wall-clock, so what it
    # learns differs between CPUs): its threshold here splits its own scores in the middle,
    # so about half the parts are rejected and a copy that scores every part alike flips.
    x_cls = _crops(models, data, "classifier")
    cls = load_model(models / "classifier.onnx", "cpu")
    raw_cls = cls.infer(x_cls)
    meta = replace(cls.meta, threshold=_middle_split(raw_cls))
    write_metadata(models / "classifier.onnx", meta)
    f_cls = np.asarray(meta.normalized(raw_cls))
    # a classifier copy calibrated on blank crops (its activation ranges collapse: real parts
    # saturate them; its map stays float as in training), and an autoencoder copy whose
    # quantized ops change no number
    assert 0 < (f_cls >= 1.0).sum() < len(f_cls)
    quantize_static(models / "classifier.onnx", models / "classifier.int8.onnx",
                    np.zeros_like(x_cls[:4]), nodes_to_exclude=float_nodes(models / "classifier.onnx"))
    x_ae = _crops(models, data, "autoencoder")
    f_ae = _normalized(load_model(models / "autoencoder.onnx", "cpu"), x_ae)
    quantize_static(models / "autoencoder.onnx", models / "autoencoder.int8.onnx", x_ae,
                    op_types=("Relu",), preprocess=False)
    q_cls = _normalized(load_model(models / "classifier.int8.onnx", "cpu"), x_cls)
    q_ae = _normalized(load_model(models / "autoencoder.int8.onnx", "cpu"), x_ae)
    flips = int(((f_cls >= 1.0) != (q_cls >= 1.0)).sum())
    assert flips > 0 and ((f_ae >= 1.0) == (q_ae >= 1.0)).all()

    args = ["evaluate", "--models", str(models), "--data", str(data), "--quiet"]
    assert main(args + ["--json", str(tmp_path / "check.json"), "--keep-int8"]) == 0
    check = json.loads((tmp_path / "check.json").read_text())["int8_check"]["copies"]
    assert check["classifier"]["verdicts_flipped"] == flips
    assert not check["classifier"]["passes"] and check["autoencoder"]["passes"]
    labels = np.array([s.label for s in read_dataset(data) if s.split == "test"])
    assert check["autoencoder"]["auroc_change"] == pytest.approx(
        pairwise_auroc(q_ae[labels == 1], q_ae[labels == 0])
        - pairwise_auroc(f_ae[labels == 1], f_ae[labels == 0]), abs=1e-12)
    assert "--keep-int8" in check["classifier"]["action"]
    assert (models / "classifier.int8.onnx").is_file(), "--keep-int8 keeps a failing copy"
    capsys.readouterr()

    # by default a failing copy is deleted: a recipe naming it is refused, never run
    assert main(args + ["--json", str(tmp_path / "prune.json")]) == 0
    printed = capsys.readouterr().out
    assert not (models / "classifier.int8.onnx").exists()
    assert (models / "autoencoder.int8.onnx").is_file()
    assert "int8 classifier: pruned" in printed and "int8 autoencoder: kept" in printed
    check = json.loads((tmp_path / "prune.json").read_text())["int8_check"]["copies"]
    assert (check["classifier"]["action"], check["autoencoder"]["action"]) == ("pruned", "kept")


def test_a_classifier_file_without_a_map_is_evaluated_without_one(folder, tmp_path):
    """Files exported before the class activation map: scored as before, no pixel metrics,
    and the gallery shows the autoencoder's map alone."""
    models, data = folder
    old = tmp_path / "models"
    old.mkdir()
    for name in ("autoencoder.onnx", "recipe_fragment.toml", "split.json"):
        shutil.copy(models / name, old / name)
    graph = onnx.load(str(models / "classifier.onnx"))
    outputs = [o for o in graph.graph.output if o.name == "p_defect"]
    del graph.graph.output[:]
    graph.graph.output.extend(outputs)
    onnx.save(graph, str(old / "classifier.onnx"))
    meta = load_model(models / "classifier.onnx", "cpu").meta
    write_metadata(old / "classifier.onnx", replace(meta, output_names=("p_defect",)))
    assert not load_model(old / "classifier.onnx", "cpu").has_map

    js = tmp_path / "eval.json"
    assert main(["evaluate", "--models", str(old), "--data", str(data), "--json", str(js),
                 "--report", str(tmp_path / "report"), "--quiet"]) == 0
    result = json.loads(js.read_text())
    assert not result["classifier"]["has_map"] and "pixel_auroc" not in result["classifier"]
    assert result["autoencoder"]["has_map"] and "pixel_auroc" in result["autoencoder"]
    png = cv2.imread(str(tmp_path / "report" / "defect_gallery.png"))
    assert png.shape[1] == pytest.approx(2.3 * 2 * 2 * DPI, abs=2)  # crop + one map, twice
