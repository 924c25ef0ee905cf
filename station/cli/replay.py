"""``station replay``: a folder or data set through the same engine as the line.

An image that cannot be decoded is skipped, never retried: it is listed (file, label, reason)
in the printout and under ``skipped`` in the JSON, counted in ``metrics.skipped``, and the
replay goes on and ends after the last sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from station.cli.outputs import output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, type=Path, help="the product's recipe (TOML)")
    parser.add_argument("--data", required=True, type=Path,
                        help="MVTec-layout data set, plain good/ defect/ folders, or labels.csv")
    parser.add_argument("--json", type=output_file, default=None, help="write verdicts and metrics here")
    parser.add_argument("--split", choices=("test", "train", "all"), default="all",
                        help="which samples of the data set to replay (default: all)")
    parser.add_argument("--records", action="store_true",
                        help="write the recipe's records too (default: replay leaves them alone)")


def run(args: argparse.Namespace) -> int:
    from station.cli.headless import truth_summary
    from station.config import RecipeError, load_recipe
    from station.pipeline import Engine
    from station.pipeline.startup import describe_startup_error, startup_errors
    from station.sources.dataset import SampleSource
    from station.sources.datasets import DatasetError, read_dataset

    try:
        recipe = load_recipe(args.recipe)
        samples: list[Any] = list(read_dataset(args.data))
    except (RecipeError, DatasetError) as exc:
        print(f"station replay: {exc}", file=sys.stderr)
        return 2
    if args.split != "all":
        samples = [s for s in samples if s.split == args.split]
    # Replay sends nothing down the serial line and never drops a frame.
    recipe = dataclasses.replace(recipe, reject=dataclasses.replace(recipe.reject, enabled=False))
    try:
        engine = Engine(recipe, source=SampleSource(samples, args.data.name),
                        trigger_mode="hardware", block_when_busy=True, records=args.records)
    except startup_errors() as exc:  # one line naming the recipe file and key
        print(f"station replay: {describe_startup_error(args.recipe, recipe, exc)}",
              file=sys.stderr)
        return 2
    from station.progress import progress_bar

    skipped: list[Any] = []
    with engine:
        bar = progress_bar(total=len(samples), desc="replay", unit="part", file=sys.stderr)
        engine.events.part.connect(lambda _result: bar.update(1))

        def on_skip(skip: Any) -> None:
            skipped.append(skip)
            bar.update(1)

        engine.acquisition.add_skip_listener(on_skip)
        engine.start()
        engine.wait_finished()
        engine.stop()
        bar.close()
        results = engine.results()
        summary = truth_summary(engine)
        stats = engine.stats()
    rows = []
    for r in results:
        s = r.truth
        rows.append({"part_id": r.part_id, "file": str(getattr(s, "path", "")),
                     "label": getattr(s, "label", None), "defect_type": getattr(s, "defect_type", ""),
                     "verdict": r.verdict, "autoencoder": r.ae_score, "classifier": r.cls_score,
                     "latency_ms": round(r.latency_ms, 2), "error": r.error})
    tp, fn = summary["defects_rejected"], summary["defects_passed"]
    fp, tn = summary["good_rejected"], summary["good_passed"]
    skipped_rows = [_skipped_row(skip) for skip in skipped]
    metrics = {
        "parts": len(rows), "errors": sum(r["verdict"] == "ERROR" for r in rows),
        "skipped": len(skipped_rows),
        "recall": tp / (tp + fn) if tp + fn else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "false_reject_rate": fp / (fp + tn) if fp + tn else None,
        "accuracy": (tp + tn) / (tp + tn + fp + fn) if tp + tn + fp + fn else None,
        **summary, "latency_p50_ms": stats.latency_p50_ms, "latency_p99_ms": stats.latency_p99_ms,
    }
    for key, value in metrics.items():
        print(f"{key:>18}: {value if not isinstance(value, float) else round(value, 4)}")
    print("(latency: frame to verdict, with the wait in the queue: replay hands the station "
          "frames as fast as it takes them; `station bench` times a part alone)")
    errors = [r for r in rows if r["verdict"] == "ERROR"]
    for row in errors[:20]:
        print(f"ERROR {row['file']}: {row['error']}", file=sys.stderr)
    for row in skipped_rows[:20]:
        print(f"SKIPPED {row['file']}: {row['reason']}", file=sys.stderr)
    if len(skipped_rows) > 20:
        print(f"SKIPPED ... and {len(skipped_rows) - 20} more (all in --json)", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"metrics": metrics, "parts": rows,
                                         "skipped": skipped_rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _skipped_row(skip) -> dict:
    """A skipped image for the JSON: which sample, what it was labelled, why it was skipped."""
    s = skip.truth
    return {"file": str(skip.path), "label": getattr(s, "label", None),
            "defect_type": getattr(s, "defect_type", ""), "reason": skip.reason}
