"""``station bench`` end to end on tiny models: the JSON the README quotes has sane numbers.

Behaviour, not speed: the keys exist, the values are positive and the ratio plausible. The
models are exported here (tiny VGG16 and autoencoder at 32 px, plus a static int8 copy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from station.cli import main  # noqa: E402
from station.models.metadata import ModelMetadata  # noqa: E402
from station.vision.align import AlignParams  # noqa: E402
from station.vision.localize import LocalizeParams  # noqa: E402
from station.vision.preprocess import PreprocessSpec  # noqa: E402
from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead  # noqa: E402
from training.classifier import VGG16, VGGConfig  # noqa: E402
from training.export import export_onnx  # noqa: E402

SIZE = 32


def _meta(kind: str, threshold: float, architecture: dict) -> ModelMetadata:
    return ModelMetadata(kind=kind, threshold=threshold,
                         preprocess=PreprocessSpec(size=SIZE).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         version=f"{kind}-bench-test", architecture=architecture)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from station.sim import render_part
    from station.vision.preprocess import crop_for_model
    from training.quantize import quantize_static

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bench-models")
    cfg = VGGConfig(size=SIZE, in_channels=1, width=0.05)
    vgg = VGG16(cfg).eval()
    opts = AutoencoderOptions(depth=2, base_channels=4, max_channels=8, latent_channels=4)
    head = ScoringHead(ConvAutoencoder(1, opts), SIZE, opts).eval()
    x = torch.rand(1, 1, SIZE, SIZE)
    export_onnx(vgg, folder / "classifier.onnx", _meta("classifier", 0.5, cfg.to_dict()), x)
    export_onnx(head, folder / "autoencoder.onnx", _meta("autoencoder", 2.0, opts.to_dict()), x)
    import numpy as np

    rng = np.random.default_rng(0)
    calib = np.stack([crop_for_model(render_part(rng, size=(256, 256)).image, LocalizeParams(),
                                     AlignParams(), PreprocessSpec(size=SIZE))[1]
                      for _ in range(4)])
    quantize_static(folder / "classifier.onnx", folder / "classifier.int8.onnx", calib)
    return folder


def test_bench_writes_pipeline_and_model_numbers(model_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--models", str(model_dir), "--json", str(out), "--parts", "12",
               "--repeats", "3", "--threads", "1", "--min-seconds", "0.1",
               "--long-parts", "300", "--plant-parts", "5", "--plant-seconds", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and str(out) in printed
    result = json.loads(out.read_text())

    assert result["matmul_peak_gflops"] > 0
    models = result["models"]
    assert set(models) == {"autoencoder", "classifier", "classifier.int8"}
    for m in models.values():
        assert m["latency_ms_p50"] > 0 and m["runs"] >= 3
        assert m["achieved_gflops"] > 0 and m["share_of_matmul_peak"] > 0
    assert models["classifier.int8"]["quantization"] == "int8-static-qdq"
    assert models["classifier.int8"]["speedup_vs_float32"] > 0

    torch_eager = result["pytorch_eager"]
    for name in ("autoencoder", "classifier"):
        assert torch_eager[name]["latency_ms_p50"] > 0, torch_eager

    # a step of station train's loop on one of the classifier's networks, in the layout it
    # trains in and the plain one
    step = result["training_step"]["classifier"]
    assert step["layout"] == "channels_last" and step["batch"] == 32
    assert step["input"] == [1, SIZE, SIZE]
    by_layout = step["step_ms_p50_by_layout"]
    assert set(by_layout) == {"channels_last", "contiguous"} and min(by_layout.values()) > 0
    assert step["step_ms_p50"] == by_layout["channels_last"]
    assert step["speedup_vs_contiguous"] == pytest.approx(
        by_layout["contiguous"] / by_layout["channels_last"], rel=0.02)
    assert "classifier training step (batch 32)" in printed

    for key in ("pipeline", "pipeline_int8_classifier"):
        p = result[key]
        assert p["parts"] == 12 and p["errors"] == 0 and p["paced_errors"] == 0
        assert p["engine_parts_per_s"] > 0 and p["models_parts_per_s"] > 0
        assert 0 < p["throughput_ratio"] < 1.5
        assert p["throughput_ratio"] == pytest.approx(
            p["engine_parts_per_s"] / p["models_parts_per_s"], rel=0.02)
        assert 0 < p["per_part_ms_p50"] <= p["per_part_ms_p99"]
        assert 0 < p["trigger_to_verdict_ms_p50"] <= p["trigger_to_verdict_ms_p99"]
        # a paced part's own time is part of its trigger-to-verdict latency
        assert 0 < p["paced_per_part_models_ms_p50"] <= p["paced_per_part_ms_p50"]
        assert p["paced_per_part_ms_p50"] <= p["paced_per_part_ms_p99"]
        assert p["paced_per_part_ms_p50"] <= p["trigger_to_verdict_ms_p50"]
        # every part's reject point fired, REJECT_DELAY_MS after its trigger
        assert p["trigger_to_reject_ms_p50"] >= p["reject_delay_ms"]
    # endurance, records on: every part has its row and its reject outcome, whatever the
    # machine's load made the engine shed; memory is measured after the warm-up and at the end
    long = result["long_run"]
    assert long["parts"] == 300 and long["classifier"] == "classifier.int8.onnx"
    assert long["rows"] == 300 and long["rows_match_parts"] and long["rows_lost"] == 0
    assert long["rows_without_reject_outcome"] == 0
    assert 0 <= long["shed"] < 300 and long["warmup_parts"] == 30
    assert long["paced_parts_per_s"] == pytest.approx(
        result["pipeline_int8_classifier"]["engine_parts_per_s"] / 2, rel=0.01)
    assert long["rss_mb_warmup"] > 0 and long["rss_mb_end"] > 0
    assert long["rss_growth_after_warmup_pct"] == pytest.approx(
        100 * (long["rss_mb_end"] - long["rss_mb_warmup"]) / long["rss_mb_warmup"], abs=0.1)
    timing = long["reject_timing_error_ms"]
    assert timing["count"] >= long["shed"]
    if timing["count"]:
        assert 0 <= timing["p50"] <= timing["p99"] <= timing["max"]
    assert long.get("peak_rss_mb", 1.0) > 0
    assert result["peak_rss_mb"] > 0
    assert "long run: 300 parts" in printed and "300 rows (= parts)" in printed
    # the plant network: a real pymodbus / asyncua client triggers 5 parts each and waits for
    # result-valid; MQTT through a real local Mosquitto
    plant = result["plant"]
    for proto in ("modbus", "opcua"):
        rep = plant[f"{proto}_trigger_to_result_valid"]
        assert rep["parts"] == 5 and 0 < rep["p50_ms"] <= rep["p99_ms"] <= rep["max_ms"]
        assert f"{proto}: trigger -> result-valid over 5 parts" in printed
    if "skipped" not in plant["mqtt"]:
        assert plant["mqtt"]["publisher"]["messages_per_s"] > 0
        line = plant["mqtt"]["line"]
        assert line["parts"] > 0 and 0 < line["p50_ms"] <= line["p99_ms"]


def test_bench_refuses_a_folder_without_models(tmp_path: Path, capsys):
    rc = main(["bench", "--models", str(tmp_path), "--json", str(tmp_path / "x.json")])
    assert rc == 2
    assert "no autoencoder.onnx" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_the_torch_comparison_rebuilds_a_colour_classifier(tmp_path: Path):
    # the training writes the classifier's width and size, not its channels: those are the
    # crop's (preprocess), so a colour product's network is rebuilt with three
    from station.cli.benchmarks import _torch_network

    cfg = VGGConfig(size=SIZE, in_channels=3, width=0.05)
    vgg = VGG16(cfg).eval()
    meta = ModelMetadata(kind="classifier", threshold=0.5,
                         preprocess=PreprocessSpec(size=SIZE, channels=3).to_metadata(),
                         localize=LocalizeParams().to_dict(), align=AlignParams().to_dict(),
                         architecture={"width": 0.05, "size": SIZE, "members": 1})
    path = export_onnx(vgg, tmp_path / "classifier.onnx", meta, torch.rand(1, 3, SIZE, SIZE))
    module, shape = _torch_network(path)
    assert shape == (3, SIZE, SIZE)
    with torch.inference_mode():
        assert module(torch.rand(1, *shape)).shape[0] == 1
