"""``station bench``: how fast the models and the whole station run on this machine.

Numbers, not assertions: the JSON it writes is what the README quotes. Every figure is a
median over repeated runs measured in the same process, because these machines are shared.
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.inference import AutoencoderModel, ClassifierModel, load_model
from station.inspect import DecisionSettings, Inspector
from station.preprocess import prepare
from station.sources.base import EndOfStream, Frame, FrameSource


def matmul_peak_gflops(n: int = 1024, repeats: int = 7) -> float:
    """float32 matrix-multiply throughput numpy reaches here (the 'peak' models are held to)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2.0 * n**3 / min(times) / 1e9


def model_flops(path: Path) -> float | None:
    """Multiply-adds ×2 of one inference (conv, gemm, matmul), from the ONNX graph's shapes.

    Needs the ``onnx`` package (the ``train`` extra); None without it.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(str(path))
    for inp in model.graph.input:  # fix the batch to 1 so shapes are concrete
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:
        return None
    shapes: dict[str, list[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes.update(inits)
    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "QLinearConv"):
            w = shapes.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            out = shapes.get(node.output[0])
            if not w or not out or 0 in out:
                continue
            if node.op_type == "ConvTranspose":
                inp = shapes.get(node.input[0])
                if not inp:
                    continue
                total += 2.0 * float(np.prod(inp)) * w[1] * float(np.prod(w[2:]))
            else:
                total += 2.0 * float(np.prod(out)) * w[1] * float(np.prod(w[2:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b and len(b) >= 2:
                total += 2.0 * float(np.prod(a)) * b[-1]
    return total or None


def _latency(fn, repeats: int, min_seconds: float = 1.0) -> list[float]:
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 500):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return times


def bench_model(path: Path, peak_gflops: float, threads: int, repeats: int) -> dict[str, Any]:
    """Batch-1 onnxruntime latency of one model file, with achieved GFLOP/s."""
    model = load_model(path, provider="auto", threads=threads)
    x = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    times = _latency(lambda: model.infer(x), repeats)
    median = statistics.median(times)
    flops = model_flops(path)
    out: dict[str, Any] = {
        "file": path.name, "kind": model.kind, "provider": model.provider,
        "quantization": model.meta.quantization.get("mode", "none"),
        "input": list(model.input_shape), "runs": len(times),
        "latency_ms_p50": round(median, 3),
        "latency_ms_p90": round(float(np.percentile(times, 90)), 3),
    }
    if flops:
        achieved = flops / (median / 1000.0) / 1e9
        out.update(gflop=round(flops / 1e9, 4), achieved_gflops=round(achieved, 2),
                   share_of_matmul_peak=round(achieved / peak_gflops, 3))
    return out


def bench_torch(model_dir: Path, repeats: int) -> dict[str, Any]:
    """The same models in PyTorch eager mode, when torch and their checkpoints are here."""
    try:
        import torch

        from training.export import load_checkpoint
    except ImportError as exc:
        return {"skipped": f"PyTorch comparison needs the train extra ({exc})"}
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for name in ("autoencoder", "classifier"):
        ckpt = model_dir / f"{name}.pt"
        if not ckpt.exists():
            out[name] = {"skipped": f"no checkpoint {ckpt.name}"}
            continue
        module, shape = load_checkpoint(ckpt)
        x = torch.rand((1, *shape))
        with torch.inference_mode():
            times = _latency(lambda m=module, x=x: m(x), repeats)
        out[name] = {"latency_ms_p50": round(statistics.median(times), 3), "runs": len(times)}
    return out


class _MemorySource(FrameSource):
    """Pre-rendered frames as a camera: flat out (``fps=0``) or paced like a real one."""

    def __init__(self, frames: list[np.ndarray], fps: float = 0.0) -> None:
        super().__init__("bench")
        self.frames = frames
        self._i = 0
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._next = 0.0

    def open(self) -> None:
        self._i = 0
        self._info.height, self._info.width = self.frames[0].shape[:2]
        self._next = time.monotonic()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._i >= len(self.frames):
            raise EndOfStream("bench frames done")
        if self._period:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next += self._period
        image = self.frames[self._i]
        self._i += 1
        return Frame(image, self._next_seq(), time.monotonic(), self.name)

    def close(self) -> None:
        """Nothing to release."""


def _engine_run(recipe: Any, inspector: Inspector, frames: list[np.ndarray], fps: float,
                records_dir: Path) -> tuple[list, float, list, dict]:
    """One engine run over ``frames``: results, wall time, reject records, timing stats."""
    from station.engine import Engine

    reject = dataclasses.replace(recipe.reject, enabled=True, port="loop://", mode="message",
                                 ack="", delay_mode="time", delay_ms=REJECT_DELAY_MS)
    records = dataclasses.replace(recipe.records, database=str(records_dir / "bench.sqlite"),
                                  images_dir=str(records_dir / "images"))
    run_recipe = dataclasses.replace(recipe, reject=reject, records=records)
    engine = Engine(run_recipe, source=_MemorySource(frames, fps), inspector=inspector,
                    trigger_mode="hardware", block_when_busy=True, streak_alarm=0)
    with engine:
        t0 = time.perf_counter()
        engine.start()
        engine.wait_finished()
        wall = time.perf_counter() - t0
        engine.stop()
        results = engine.results()
        time.sleep(REJECT_DELAY_MS / 1000.0 + 0.1)  # let the last reject outputs fire
        fired = [engine.scheduler.outcome(r.part_id) for r in results]
        timing = engine.scheduler.timing_stats()
    return results, wall, fired, timing


REJECT_DELAY_MS = 300.0


def bench_pipeline(recipe: Any, inspector: Inspector, frames: list[np.ndarray],
                   records_dir: Path) -> dict[str, Any]:
    """Parts per second through the engine against the two models alone, on the same parts.

    Two engine runs: flat out (throughput; parts queue, so their latency is queueing) and
    paced at half that rate, as a line runs (trigger-to-verdict and trigger-to-reject).
    """
    from station.align import align

    # The models alone: prepared tensors in, scores out, nothing else.
    tensors = []
    specs = [s for s in (inspector.ae_spec, inspector.cls_spec) if s is not None]
    for image in frames[:16]:
        loc = inspector.locate(image)
        tensors.append([prepare(align(image, loc, inspector.align_params, s.size).crop, s)[None]
                        for s in specs])

    def models_only() -> None:
        for pair in tensors:
            i = 0
            if inspector.autoencoder is not None:
                inspector.autoencoder.infer(pair[i])
                i += 1
            if inspector.classifier is not None:
                inspector.classifier.infer(pair[i])

    per_batch = _latency(models_only, 5, min_seconds=2.0)
    models_pps = len(tensors) / (statistics.median(per_batch) / 1000.0)

    # The engine flat out: acquisition thread, trigger, queue, inspection thread, reject
    # scheduler and serial link, records writer — everything but the GUI.
    results, wall, _, _ = _engine_run(recipe, inspector, frames, 0.0, records_dir / "flat")
    engine_pps = len(results) / wall
    inspect_ms = sorted(r.inspect_ms for r in results)

    # The engine paced at half its own rate: the latencies a part sees on a line.
    paced = frames[: max(20, len(frames) // 2)]
    p_results, _, fired, timing = _engine_run(recipe, inspector, paced, engine_pps / 2.0,
                                              records_dir / "paced")
    latencies = sorted(r.latency_ms for r in p_results)
    to_reject = sorted((f.actual - r.t_trigger) * 1000.0
                       for r, f in zip(p_results, fired, strict=True)
                       if f is not None and f.actual is not None)
    return {
        "parts": len(results),
        "engine_parts_per_s": round(engine_pps, 2),
        "models_parts_per_s": round(models_pps, 2),
        "throughput_ratio": round(engine_pps / models_pps, 3),
        "per_part_ms_p50": round(_q(inspect_ms, 0.5), 3),
        "per_part_ms_p99": round(_q(inspect_ms, 0.99), 3),
        "paced_parts": len(p_results),
        "paced_parts_per_s": round(engine_pps / 2.0, 2),
        "trigger_to_verdict_ms_p50": round(_q(latencies, 0.5), 3),
        "trigger_to_verdict_ms_p99": round(_q(latencies, 0.99), 3),
        "reject_delay_ms": REJECT_DELAY_MS,
        "trigger_to_reject_ms_p50": round(_q(to_reject, 0.5), 3),
        "trigger_to_reject_ms_p99": round(_q(to_reject, 0.99), 3),
        "reject_timing_error_ms": timing,
        "errors": sum(r.verdict == "ERROR" for r in results),
    }


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, int(round(q * (len(values) - 1))))])


def bench_frames(n: int, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Synthetic frames, one part each, a share of them defective."""
    from station.synthetic import DEFECT_TYPES, render_part

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        defect = DEFECT_TYPES[i % len(DEFECT_TYPES)] if i % 4 == 0 else None
        frames.append(render_part(rng, size=(size, size), defect=defect).image)
    return frames


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(recipe: Any, model_dir: Path, parts: int, repeats: int, threads: int,
              long_parts: int) -> dict[str, Any]:
    """All the measurements, as one JSON-able dict."""
    peak = matmul_peak_gflops()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "machine": platform.machine(), "cpus": _cpus()},
        "matmul_peak_gflops": round(peak, 2),
        "models": {},
    }
    for path in sorted(model_dir.glob("*.onnx")):
        out["models"][path.stem] = bench_model(path, peak, threads, repeats)
    for key, model in out["models"].items():
        base = out["models"].get(key.replace(".int8", ""))
        if key.endswith(".int8") and base:
            model["speedup_vs_float32"] = round(base["latency_ms_p50"] / model["latency_ms_p50"], 2)
    out["pytorch_eager"] = bench_torch(model_dir, repeats)

    def inspector_with(suffix: str) -> Inspector:
        ae = model_dir / f"autoencoder{suffix}.onnx"
        clf = model_dir / f"classifier{suffix}.onnx"
        ae_m = load_model(ae, threads=threads) if ae.exists() else load_model(
            model_dir / "autoencoder.onnx", threads=threads)
        clf_m = load_model(clf, threads=threads) if clf.exists() else None
        rule = "either" if clf_m is not None else "autoencoder"
        return Inspector(ae_m if isinstance(ae_m, AutoencoderModel) else None,
                         clf_m if isinstance(clf_m, ClassifierModel) else None,
                         recipe.localize, recipe.align,
                         DecisionSettings(rule, recipe.decision.autoencoder_threshold,
                                          recipe.decision.classifier_threshold))

    frames = bench_frames(parts)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        records = Path(tmp)
        out["pipeline"] = bench_pipeline(recipe, inspector_with(""), frames, records / "a")
        if (model_dir / "classifier.int8.onnx").exists():
            out["pipeline_int8_classifier"] = bench_pipeline(recipe, _int8_classifier(
                inspector_with(""), model_dir, threads), frames, records / "b")
        if long_parts:
            long_frames = frames * max(1, long_parts // max(1, len(frames)))
            rss0 = peak_rss_mb()
            results, wall, _, _ = _engine_run(recipe, inspector_with(""), long_frames, 0.0,
                                              records / "long")
            out["long_run"] = {"parts": len(results),
                               "engine_parts_per_s": round(len(results) / wall, 2),
                               "peak_rss_mb_before": round(rss0, 1),
                               "peak_rss_mb_after": round(peak_rss_mb(), 1)}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def _int8_classifier(inspector: Inspector, model_dir: Path, threads: int) -> Inspector:
    inspector.classifier = load_model(model_dir / "classifier.int8.onnx", threads=threads)
    inspector.cls_spec = inspector.classifier.meta.preprocess_spec()
    return inspector


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
