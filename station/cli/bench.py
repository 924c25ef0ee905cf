"""``station bench``: model latency, pipeline throughput and latency, memory; JSON out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from station.cli.numbers import amount, count
from station.cli.outputs import output_file

REPO = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with autoencoder.onnx, classifier.onnx (and *.int8.onnx); "
                             "default: the demo models")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo.toml",
                        help="recipe for the crop and decision settings (default: the demo's)")
    parser.add_argument("--json", type=output_file, required=True, help="write the results here")
    parser.add_argument("--parts", type=count(1), default=120, help="parts through the pipeline")
    parser.add_argument("--long-parts", type=count(0), default=0,
                        help="endurance: also run this many parts through the engine with "
                             "records on, paced as a line (memory, rows = parts, reject "
                             "timing over the whole run, shed parts; 0 = skip)")
    parser.add_argument("--long-fps", type=amount(0), default=0.0,
                        help="the long run's parts per second (0 = half the engine's "
                             "measured rate)")
    parser.add_argument("--repeats", type=count(1), default=30, help="latency runs per model (min)")
    parser.add_argument("--threads", type=count(0), default=0, help="onnxruntime threads (0 = auto)")
    parser.add_argument("--plant-parts", type=count(0), default=100,
                        help="parts PLC-triggered over Modbus TCP and over OPC UA for the "
                             "trigger -> result-valid latency, and the MQTT figures (0 = skip)")
    parser.add_argument("--plant-seconds", type=amount(0), default=30.0,
                        help="seconds of the demo line publishing to MQTT (verdict -> PUBACK)")
    parser.add_argument("--min-seconds", type=amount(0), default=1.0,
                        help="sample each latency figure at least this long (default 1 s)")


def run(args: argparse.Namespace) -> int:
    from station.cli.benchmarks import run_bench
    from station.config import RecipeError, load_recipe

    models = args.models
    if models is None:
        from station.cli.demo import ensure_demo_models

        models = ensure_demo_models()
    if not (models / "autoencoder.onnx").exists():
        print(f"station bench: {models} holds no autoencoder.onnx", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(args.recipe, check_files=False)
    except RecipeError as exc:
        print(f"station bench: {exc}", file=sys.stderr)
        return 2
    result = run_bench(recipe, models, args.parts, args.repeats, args.threads, args.long_parts,
                       args.min_seconds, args.long_fps)
    if args.plant_parts:
        from station.cli.plant_bench import bench_plant

        result["plant"] = bench_plant(recipe, models, args.plant_parts, args.plant_seconds)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"matmul peak {result['matmul_peak_gflops']} GFLOP/s")
    for name, m in result["models"].items():
        extra = f", {m['achieved_gflops']} GFLOP/s" if "achieved_gflops" in m else ""
        print(f"{name:>24}: {m['latency_ms_p50']:8.2f} ms p50{extra}")
    step = result.get("training_step", {}).get("classifier")
    if step:
        other = {k: v for k, v in step["step_ms_p50_by_layout"].items() if k != step["layout"]}
        print(f"classifier training step (batch {step['batch']}): {step['step_ms_p50']} ms p50 "
              f"({step['layout']}; " + ", ".join(f"{k} {v} ms" for k, v in other.items())
              + f": {step['speedup_vs_contiguous']}x)")
    for key in ("pipeline", "pipeline_int8_classifier"):
        if key not in result:
            continue
        p = result[key]
        print(f"{key}: {p['engine_parts_per_s']} parts/s through the engine, models alone "
              f"{p['models_parts_per_s']}/s (ratio {p['throughput_ratio']}), per part "
              f"{p['per_part_ms_p50']} ms p50 (models {p['per_part_models_ms_p50']} ms); paced "
              f"as a line: per part {p['paced_per_part_ms_p50']} ms p50 (models "
              f"{p['paced_per_part_models_ms_p50']} ms), trigger->verdict p99 {p['trigger_to_verdict_ms_p99']} ms, trigger->reject p99 "
              f"{p['trigger_to_reject_ms_p99']} ms")
    if "long_run" in result:
        lr = result["long_run"]
        t = lr["reject_timing_error_ms"]
        print(f"long run: {lr['parts']} parts at {lr['engine_parts_per_s']}/s, {lr['rows']} rows "
              f"({'= parts' if lr['rows_match_parts'] else 'NOT = parts'}), {lr['shed']} shed; "
              f"RSS {lr['rss_mb_warmup']} MB after {lr['warmup_parts']} parts -> "
              f"{lr['rss_mb_end']} MB at the end ({lr['rss_growth_after_warmup_pct']} %), peak "
              f"{lr.get('peak_rss_mb')} MB; reject timing error p99 {t['p99']} ms over "
              f"{t['count']} outputs")
    print(f"wrote {args.json}")
    return 0
