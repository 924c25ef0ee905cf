"""``station bench``: how fast the models and the whole station run on this machine.

Numbers, not assertions: the JSON it writes is what the README quotes. Every figure is a
median over repeated runs measured in the same process, because these machines are shared.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from station.models.inference import AutoencoderModel, ClassifierModel
from station.pipeline.inspector import Inspector, load_line_model
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


def bench_model(path: Path, peak_gflops: float, threads: int, repeats: int,
                min_seconds: float = 1.0) -> dict[str, Any]:
    """Batch-1 onnxruntime latency of one model file, with achieved GFLOP/s."""
    model = load_line_model(path, provider="auto", threads=threads)
    x = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    times = _latency(lambda: model.infer(x), repeats, min_seconds)
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


def bench_torch(model_dir: Path, repeats: int, threads: int = 0,
                min_seconds: float = 1.0) -> dict[str, Any]:
    """The same networks in PyTorch eager mode, when torch (the train extra) is installed.

    The networks are rebuilt from each ONNX file's ``architecture`` metadata at its input
    size (``training.classifier`` for the classifier, ``training.autoencoder`` for the autoencoder)
    with fresh weights: latency does not depend on the weight values.
    """
    try:
        import torch
    except ImportError as exc:
        return {"skipped": f"PyTorch comparison needs the train extra ({exc})"}
    # torch's OpenMP pool degrades badly when its threads are preempted (a shared machine),
    # so it is measured at one thread and at the thread count it would use; both are kept.
    default_threads = torch.get_num_threads()
    counts = sorted({1, threads if threads > 0 else default_threads})
    out: dict[str, Any] = {"threads_tried": counts}
    for name in ("autoencoder", "classifier"):
        path = model_dir / f"{name}.onnx"
        if not path.exists():
            out[name] = {"skipped": f"no {path.name}"}
            continue
        try:
            module, shape = _torch_network(path)
        except Exception as exc:  # an architecture this version cannot rebuild: say which
            out[name] = {"skipped": f"cannot rebuild {path.name} in torch: {exc}"}
            continue
        x = torch.rand((1, *shape))
        per_threads: dict[str, float] = {}
        runs = 0
        for n in counts:
            torch.set_num_threads(n)
            with torch.inference_mode():
                times = _latency(lambda m=module, x=x: m(x), repeats, min_seconds)
            per_threads[str(n)] = round(statistics.median(times), 3)
            runs += len(times)
        best = min(per_threads, key=per_threads.__getitem__)
        median = per_threads[best]
        out[name] = {"latency_ms_p50": median, "threads": int(best),
                     "latency_ms_p50_by_threads": per_threads, "runs": runs,
                     "weights": "random (rebuilt from the architecture metadata)"}
        flops = model_flops(path)
        if flops:
            out[name]["achieved_gflops"] = round(flops / (median / 1000.0) / 1e9, 2)
    torch.set_num_threads(default_threads)
    return out


def bench_training_step(model_dir: Path, repeats: int,
                        min_seconds: float = 1.0) -> dict[str, Any]:
    """ms per training step of one of the classifier's networks, at the batch size and in the
    memory layout ``station train`` uses, and in the plain layout for comparison: a
    time-budgeted training run takes as many more steps as this is faster.

    The network is rebuilt from ``classifier.onnx``'s architecture metadata, with fresh
    weights and random batches (a step's time does not depend on them).
    """
    try:
        import torch

        from training.classifier import Ensemble
        from training.classifier.options import ClassifierOptions
        from training.classifier.train import TRAIN_LAYOUT, train_step
    except ImportError as exc:
        return {"skipped": f"the training step needs the train extra ({exc})"}
    path = model_dir / "classifier.onnx"
    if not path.exists():
        return {"skipped": f"no {path.name}"}
    try:
        module, shape = _torch_network(path)
    except Exception as exc:  # an architecture this version cannot rebuild: say which
        return {"skipped": f"cannot rebuild {path.name} in torch: {exc}"}
    net = module.members[0] if isinstance(module, Ensemble) else module
    batch = ClassifierOptions().batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *shape), generator=gen)
    y = (torch.arange(batch) % 2).float()
    layouts = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    step_ms: dict[str, float] = {}
    runs = 0
    for name, layout in layouts.items():
        model = copy.deepcopy(net).to(memory_format=layout).train()  # type: ignore[call-overload]
        optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(m=model, o=optim, f=loss_fn, lay=layout) -> None:
            train_step(m, o, f, x, y, torch.device("cpu"), lay)

        start = time.perf_counter()
        step()  # the warm-up; a network whose step takes seconds (full width) is timed once
        if time.perf_counter() - start > 2.0:
            start = time.perf_counter()
            step()
            times = [(time.perf_counter() - start) * 1000.0]
        else:  # _latency warms up once more: a step this short costs nothing to spare
            times = _latency(step, max(1, min(repeats, 10)), min_seconds)
        step_ms[name] = round(statistics.median(times), 2)
        runs += len(times)
    trains_in = next(name for name, layout in layouts.items() if layout == TRAIN_LAYOUT)
    return {"classifier": {
        "step_ms_p50": step_ms[trains_in], "layout": trains_in,
        "step_ms_p50_by_layout": step_ms, "batch": batch, "input": list(shape),
        "threads": torch.get_num_threads(), "runs": runs,
        "speedup_vs_contiguous": round(step_ms["contiguous"] / step_ms[trains_in], 2)}}


def _torch_network(path: Path) -> tuple[Any, tuple[int, int, int]]:
    """An eval-mode torch module matching ``path``'s architecture metadata, and its input."""
    import dataclasses as dc

    from station.models.inference import read_metadata

    meta = read_metadata(path)
    spec = meta.preprocess_spec()
    shape = spec.shape  # (channels, height, width)
    arch = dict(meta.architecture)
    if meta.kind == "classifier":
        from training.classifier import VGG16, Ensemble, VGGConfig

        known = {f.name for f in dc.fields(VGGConfig)}
        if "width" not in arch:
            raise ValueError("its architecture metadata has no VGG16 width")
        cfg = VGGConfig(**{k: v for k, v in arch.items()
                           if k in known and k not in ("size", "height", "in_channels")},
                        size=spec.size, height=spec.height, in_channels=spec.channels)
        members = int(arch.get("members", 1))  # files before the ensemble held one network
        net = VGG16(cfg) if members == 1 else Ensemble([VGG16(cfg) for _ in range(members)])
        return net.eval(), shape
    from training.autoencoder import AutoencoderOptions, ConvAutoencoder, ScoringHead

    known = {f.name for f in dc.fields(AutoencoderOptions)}
    missing = [k for k in ("base_channels", "max_channels", "depth", "latent_channels")
               if k not in arch]
    if missing:
        raise ValueError(f"its architecture metadata lacks {', '.join(missing)}")
    fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in arch.items() if k in known}
    opts = AutoencoderOptions(**fields)
    return ScoringHead(ConvAutoencoder(spec.channels, opts), (spec.crop_height, spec.size),
                       opts).eval(), shape


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


def _bench_engine(recipe: Any, inspector: Inspector, frames: list[np.ndarray], fps: float,
                  records_dir: Path, delay_ms: float, block: bool = True) -> Any:
    """The station's engine on ``frames`` (every frame one part), reject messages on
    ``loop://``, records on in ``records_dir``. ``block``: the camera waits for the
    inspection (throughput); else parts the engine cannot take are shed, as on a line."""
    from station.pipeline import Engine

    reject = dataclasses.replace(recipe.reject, enabled=True, port="loop://", mode="message",
                                 ack="", delay_mode="time", delay_ms=delay_ms)
    records = dataclasses.replace(recipe.records, database=str(records_dir / "bench.sqlite"),
                                  images_dir=str(records_dir / "images"))
    run_recipe = dataclasses.replace(recipe, reject=reject, records=records)
    return Engine(run_recipe, source=_MemorySource(frames, fps), inspector=inspector,
                  trigger_mode="hardware", block_when_busy=block, streak_alarm=0)


def _run_to_end(engine: Any) -> float:
    """Start ``engine``, wait until its source has ended and every part is judged, stop it;
    the wall time in seconds."""
    t0 = time.perf_counter()
    engine.start()
    engine.wait_finished()
    wall = time.perf_counter() - t0
    engine.stop()
    return wall


def _engine_run(recipe: Any, inspector: Inspector, frames: list[np.ndarray], fps: float,
                records_dir: Path, delay_ms: float = 0.0) -> tuple[list, float, list, dict, Any]:
    """One engine run over ``frames``: results (the engine keeps the last 500), wall time,
    reject outcomes, reject timing and the engine's counts (every part)."""
    delay_ms = delay_ms or REJECT_DELAY_MS
    engine = _bench_engine(recipe, inspector, frames, fps, records_dir, delay_ms)
    with engine:
        wall = _run_to_end(engine)
        results = engine.results()
        stats = engine.stats()
        time.sleep(delay_ms / 1000.0 + 0.1)  # let the last reject outputs fire
        fired = [engine.scheduler.outcome(r.part_id) for r in results]
        timing = engine.scheduler.timing_stats()
    return results, wall, fired, timing, stats


REJECT_DELAY_MS = 300.0


def bench_pipeline(recipe: Any, inspector: Inspector, frames: list[np.ndarray],
                   records_dir: Path, min_seconds: float = 1.0) -> dict[str, Any]:
    """Parts per second through the engine against the two models alone, on the same parts.

    Two engine runs: flat out (throughput; parts queue, so their latency is queueing) and
    paced at half that rate, as a line runs (trigger-to-verdict and trigger-to-reject).
    """
    # The models alone: the same parts' prepared tensors in, scores out, nothing else.
    prepared = [inspector.crop(image) for image in frames[:16]]
    tensors = [(p.ae_input, p.cls_input) for p in prepared if p.failure is None]
    if not tensors:
        raise RuntimeError(f"no part found in the bench frames: {prepared[0].failure}")

    def models_only() -> None:
        for ae_x, cls_x in tensors:
            if inspector.autoencoder is not None and ae_x is not None:
                inspector.autoencoder.infer(ae_x)
            if inspector.classifier is not None and cls_x is not None:
                inspector.classifier.infer(cls_x)

    per_batch = _latency(models_only, 5, min_seconds=2.0 * min_seconds)
    models_pps = len(tensors) / (statistics.median(per_batch) / 1000.0)

    # The engine flat out: acquisition thread, trigger, queue, inspection thread, reject
    # scheduler and serial link, records writer — everything but the GUI.
    results, wall, _, _, stats = _engine_run(recipe, inspector, frames, 0.0,
                                             records_dir / "flat")
    engine_pps = stats.parts / wall
    inspect_ms = sorted(r.inspect_ms for r in results)
    models_ms = sorted(r.inference_ms for r in results)
    other_ms = sorted(r.inspect_ms - r.inference_ms for r in results)

    # The engine paced at half its own rate: the latencies a part sees on a line. Every part
    # gets a reject output (thresholds just above 0, the least a recipe may say: same work,
    # verdict REJECT), so trigger-to-reject is timed on every part, not only on the ones these
    # models happen to reject.
    paced = frames[: max(20, len(frames) // 2)]
    # The reject point sits well after the verdict, as on a line built for this station:
    # 300 ms, or three times the slowest part's own time for slow models.
    delay_ms = max(REJECT_DELAY_MS, 100.0 * math.ceil(3.0 * _q(inspect_ms, 0.99) / 100.0))
    decision = inspector.decision
    inspector.set_decision(dataclasses.replace(decision, autoencoder_threshold=1e-9,
                                               classifier_threshold=1e-9))
    try:
        p_results, _, fired, timing, p_stats = _engine_run(recipe, inspector, paced, engine_pps / 2.0,
                                                  records_dir / "paced", delay_ms)
    finally:
        inspector.set_decision(decision)
    latencies = sorted(r.latency_ms for r in p_results)
    paced_ms = sorted(r.inspect_ms for r in p_results)
    to_reject = sorted((f.actual - r.t_trigger) * 1000.0
                       for r, f in zip(p_results, fired, strict=True)
                       if f is not None and f.actual is not None)
    return {
        "parts": stats.parts,
        "engine_parts_per_s": round(engine_pps, 2),
        "models_parts_per_s": round(models_pps, 2),
        "throughput_ratio": round(engine_pps / models_pps, 4),  # 3 digits were 2 % off at 0.02
        "per_part_ms_p50": round(_q(inspect_ms, 0.5), 3),
        "per_part_ms_p99": round(_q(inspect_ms, 0.99), 3),
        # of which the two models, and the rest (localize, align, prepare, decide)
        "per_part_models_ms_p50": round(_q(models_ms, 0.5), 3),
        "per_part_other_ms_p50": round(_q(other_ms, 0.5), 3),
        "paced_parts": len(p_results),
        "paced_parts_per_s": round(engine_pps / 2.0, 2),
        # A part's own time paced as a line: crop, both models and the decision, without the
        # flat-out run's contention with the next part's acquisition and the records writer.
        "paced_per_part_ms_p50": round(_q(paced_ms, 0.5), 3),
        "paced_per_part_ms_p99": round(_q(paced_ms, 0.99), 3),
        "paced_per_part_models_ms_p50": round(_q(sorted(r.inference_ms for r in p_results),
                                                 0.5), 3),
        "trigger_to_verdict_ms_p50": round(_q(latencies, 0.5), 3),
        "trigger_to_verdict_ms_p99": round(_q(latencies, 0.99), 3),
        "reject_delay_ms": delay_ms,
        "trigger_to_reject_ms_p50": round(_q(to_reject, 0.5), 3),
        "trigger_to_reject_ms_p99": round(_q(to_reject, 0.99), 3),
        "reject_timing_error_ms": timing,
        "errors": stats.errors,
        "paced_errors": p_stats.errors,
    }


def bench_long_run(recipe: Any, inspector: Inspector, frames: list[np.ndarray], parts: int,
                   fps: float, records_dir: Path, delay_ms: float) -> dict[str, Any]:
    """Endurance: ``parts`` parts through the engine as on a line, records on.

    Paced at ``fps`` and not blocking, so a part the station cannot take is shed (and
    counted) as it would be on the line. Reported: resident memory after the warm-up (the
    first tenth of the parts, at most 1,000; the engine keeps its last 500 results, crops
    and heatmaps included, so memory rises until then by design) and at the end, rows in
    the database against
    parts, every reject output's timing error over the whole run (from the records, not the
    scheduler's recent window), and the shed count.
    """
    long_frames = [frames[i % len(frames)] for i in range(parts)]  # the same arrays, reused
    warmup = max(1, min(1000, parts // 10))
    seen = {"parts": 0}
    rss_warmup: list[float | None] = []

    def on_part(_result: Any) -> None:
        seen["parts"] += 1
        if seen["parts"] == warmup:
            rss_warmup.append(_proc_status_mb("VmRSS"))

    rss_start = _proc_status_mb("VmRSS")
    own_peak = _reset_peak_rss()
    engine = _bench_engine(recipe, inspector, long_frames, fps, records_dir, delay_ms,
                           block=False)
    engine.events.part.connect(on_part)
    with engine:
        wall = _run_to_end(engine)
        time.sleep(delay_ms / 1000.0 + 0.2)  # the last reject outputs fire
        stats = engine.stats()
        rss_end = _proc_status_mb("VmRSS")
    rows, timing, missing = _records_summary(records_dir / "bench.sqlite")
    warm = rss_warmup[0] if rss_warmup else None
    out: dict[str, Any] = {
        "parts": stats.parts, "rows": rows, "rows_match_parts": rows == stats.parts,
        "shed": stats.shed, "rows_lost": stats.rows_lost, "errors": stats.errors,
        "seconds": round(wall, 1), "paced_parts_per_s": round(fps, 2),
        "engine_parts_per_s": round(stats.parts / wall, 2), "warmup_parts": warmup,
        "rss_mb_start": _round(rss_start), "rss_mb_warmup": _round(warm),
        "rss_mb_end": _round(rss_end),
        "rss_growth_after_warmup_pct": (round(100.0 * (rss_end - warm) / warm, 2)
                                        if warm and rss_end else None),
        "reject_delay_ms": delay_ms, "reject_timing_error_ms": timing,
        "rows_without_reject_outcome": missing,
    }
    if own_peak:
        out["peak_rss_mb"] = _round(_proc_status_mb("VmHWM"))
    return out


def _records_summary(database: Path) -> tuple[int, dict[str, float | None], int]:
    """Rows, the timing error (ms) of every reject output, and rows with no reject outcome."""
    import sqlite3

    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT count(*) FROM parts").fetchone()[0]
        errors = sorted(r[0] for r in db.execute(
            "SELECT reject_timing_ms FROM parts WHERE reject_timing_ms IS NOT NULL"))
        missing = db.execute("SELECT count(*) FROM parts WHERE reject_action IS NULL"
                             ).fetchone()[0]
    timing = {"count": len(errors), "p50": round(_q(errors, 0.5), 3),
              "p99": round(_q(errors, 0.99), 3), "max": round(errors[-1], 3) if errors else None}
    return int(rows), timing, int(missing)


def _q(values: list[float], q: float) -> float:
    from station.pipeline import percentile

    return percentile(values, q, empty=float("nan"))


def bench_frames(n: int, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Synthetic frames, one part each, a share of them defective."""
    from station.sim import DEFECT_TYPES, render_part

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        defect = DEFECT_TYPES[i % len(DEFECT_TYPES)] if i % 4 == 0 else None
        frames.append(render_part(rng, size=(size, size), defect=defect).image)
    return frames


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _proc_status_mb(key: str) -> float | None:
    """``VmRSS``/``VmHWM`` from /proc/self/status in MB (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (Linux >= 4.0), so a long run's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_bench(recipe: Any, model_dir: Path, parts: int, repeats: int, threads: int,
              long_parts: int, min_seconds: float = 1.0, long_fps: float = 0.0) -> dict[str, Any]:
    """All the measurements, as one JSON-able dict.

    ``min_seconds``: each latency figure keeps sampling at least this long (after
    ``repeats`` runs), so a median is not taken over a noisy handful. ``long_fps``: the
    long run's pace (0 = half the engine's measured rate, as the paced pipeline run).
    """
    peak = matmul_peak_gflops()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "machine": platform.machine(), "cpus": _cpus()},
        "matmul_peak_gflops": round(peak, 2),
        "models": {},
    }
    for path in sorted(model_dir.glob("*.onnx")):
        out["models"][path.stem] = bench_model(path, peak, threads, repeats, min_seconds)
    for key, model in out["models"].items():
        base = out["models"].get(key.replace(".int8", ""))
        if key.endswith(".int8") and base:
            model["speedup_vs_float32"] = round(base["latency_ms_p50"] / model["latency_ms_p50"], 2)
    out["pytorch_eager"] = bench_torch(model_dir, repeats, threads, min_seconds)

    def inspector_with(classifier_file: str) -> Inspector:
        ae_m = load_line_model(model_dir / "autoencoder.onnx", threads=threads)
        clf = model_dir / classifier_file
        clf_m = load_line_model(clf, threads=threads) if clf.exists() else None
        rule = "either" if clf_m is not None else "autoencoder"
        return Inspector(ae_m if isinstance(ae_m, AutoencoderModel) else None,
                         clf_m if isinstance(clf_m, ClassifierModel) else None,
                         recipe.localize, recipe.align,
                         dataclasses.replace(recipe.decision, rule=rule))

    int8 = (model_dir / "classifier.int8.onnx").exists()
    frames = bench_frames(parts)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        records = Path(tmp)
        out["pipeline"] = bench_pipeline(recipe, inspector_with("classifier.onnx"), frames,
                                         records / "a", min_seconds)
        if int8:
            out["pipeline_int8_classifier"] = bench_pipeline(
                recipe, inspector_with("classifier.int8.onnx"), frames, records / "b",
                min_seconds)
        if long_parts:
            # The line's configuration: the int8 classifier when there is one.
            classifier = "classifier.int8.onnx" if int8 else "classifier.onnx"
            measured = out["pipeline_int8_classifier" if int8 else "pipeline"]
            fps = long_fps or measured["engine_parts_per_s"] / 2.0
            long = bench_long_run(recipe, inspector_with(classifier), frames, long_parts, fps,
                                  records / "long", measured["reject_delay_ms"])
            out["long_run"] = {"classifier": classifier, **long}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    # last, so its batch's memory is not in the station's peak above
    out["training_step"] = bench_training_step(model_dir, repeats, min_seconds)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
