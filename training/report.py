"""``station evaluate --report DIR``: the pictures an engineer checks before trusting a model.

* ``roc.png``: ROC curves of the autoencoder, the classifier and the fused verdict;
* ``histograms.png``: normalized score histograms of good and defective images, with the
  threshold line at 1.0 (the fused panel uses the fused score, whose 1.0 is the rule);
* ``worst_misses.png``: the missed defects with the lowest and the false rejects with the
  highest fused score: the crop with the true defect outlined, and each model's map;
* ``defect_gallery.png``: one row per defect type, its best- and worst-detected part (highest
  and lowest fused score), each with the map of every model that has one (autoencoder
  anomaly map, classifier class activation map) and the true defect outlined, to see
  whether the maps land on the defects;
* ``per_type.png``: per defect type and model, recall at the chosen threshold and image
  AUROC against the good parts (``per_type_table`` is the same as printed text).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from station.pipeline.rows import score_text  # noqa: E402
from station.sources.datasets import Sample, load_mask  # noqa: E402
from training.metrics import roc_auc, roc_curve  # noqa: E402

_NAMES = {"autoencoder": "autoencoder", "classifier": "classifier", "fused": "fused"}
#: the score histograms' left edge (their axis is logarithmic)
HIST_LOW = 1e-3


def _roc(scores, labels):
    fpr, tpr, _ = roc_curve(scores, labels)
    return fpr, tpr, roc_auc(scores, labels)


def _crop_mask(sample: Sample, scores, i: int) -> np.ndarray | None:
    """The sample's full-image mask warped into the model's crop space (None without a mask)."""
    if sample.mask_path is None:
        return None
    cs = scores.crops
    shape = tuple(int(v) for v in cs.frame_shapes[i])
    gt = load_mask(sample.mask_path, shape, sample.path).astype(np.uint8) * 255
    h, w = cs.crops.shape[1:3]
    return cv2.warpAffine(gt, cs.frame_to_crop[i], (w, h), flags=cv2.INTER_NEAREST) > 0


def _show_crop(ax, scores, i: int) -> None:
    crop = scores.crops.crops[i]
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    ax.imshow(crop, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")


def _outline(ax, mask: np.ndarray | None, colour: str) -> None:
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.7)


def _map_title(scores, i: int) -> str:
    name = "anomaly map" if scores.kind == "autoencoder" else f"{scores.kind} CAM"
    return f"{name}\nscore {score_text(scores.normalized[i])} (1.0 = thr)"


def _show_map(ax, sample: Sample, scores, i: int) -> None:
    """One model's map over its own crop, on the model's one colour scale, mask outlined."""
    _show_crop(ax, scores, i)
    h, w = scores.crops.crops.shape[1:3]
    m = scores.maps[i]
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = scores.map_range
    ax.imshow(m, cmap="jet", alpha=0.5, vmin=lo, vmax=hi)
    _outline(ax, _crop_mask(sample, scores, i), "white")
    ax.set_title(_map_title(scores, i), fontsize=7)


def _part(axes, sample: Sample, scores: dict, i: int, title: str) -> None:
    """A part's crop with its mask outlined, then the map of each model that has one."""
    base = next(iter(scores.values()))
    _show_crop(axes[0], base, i)
    _outline(axes[0], _crop_mask(sample, base, i), "lime")
    axes[0].set_title(title, fontsize=7)
    h0, w0 = base.crops.crops.shape[1:3]
    for ax, sc in zip(axes[1:], _with_maps(scores), strict=True):
        _show_map(ax, sample, sc, i)
        h, w = sc.crops.crops.shape[1:3]  # one panel height a row: a crop whose height is
        ax.set_aspect((h0 / w0) / (h / w))  # rounded up to 32 px stands a little taller


def _with_maps(scores: dict) -> list:
    return [sc for sc in scores.values() if sc.maps is not None]


DPI = 110


def row_inches(scores: dict, panel: float) -> float:
    """A gallery row's height: a panel of the tallest crop at its own aspect (a long screw
    crop is a third as tall as a tile's) plus two lines of title."""
    aspect = max(sc.crops.crops.shape[1] / max(sc.crops.crops.shape[2], 1)
                 for sc in scores.values())
    return panel * aspect + TITLE_INCHES


TITLE_INCHES = 0.55


def _gallery(path: Path, items: list[tuple[int, str]], samples, scores: dict) -> Path | None:
    """One row per item: the crop, then each model's map."""
    if not items:
        return None
    cols = 1 + len(_with_maps(scores))
    fig, axes = plt.subplots(len(items), cols, squeeze=False,
                             figsize=(2.6 * cols, row_inches(scores, 2.6) * len(items)))
    for r, (i, title) in enumerate(items):
        _part(axes[r], samples[i], scores, i, title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _type_gallery(path: Path, rows: list[dict], samples, scores: dict, fused: np.ndarray,
                  verdicts: list[str] | None) -> Path | None:
    """One row per defect type: its best-detected part, then its worst-detected, each with
    the map of every model that has one and the true defect outlined."""
    if not rows:
        return None
    per = 1 + len(_with_maps(scores))
    fig, axes = plt.subplots(len(rows), 2 * per, squeeze=False,
                             figsize=(2.3 * 2 * per, row_inches(scores, 2.3) * len(rows)))
    for r, row in enumerate(rows):
        for k, which in enumerate(("best", "worst")):
            i = row[which]
            verdict = f" {verdicts[i]}" if verdicts else ""
            _part(axes[r][k * per:(k + 1) * per], samples[i], scores, i,
                  f"{row['defect_type']} {which}, {samples[i].path.name}\n"
                  f"fused {score_text(fused[i])}{verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _roc_png(path: Path, curves: dict[str, np.ndarray], labels: np.ndarray) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, s in curves.items():
        fpr, tpr, auc = _roc(s, labels)
        ax.plot(fpr, tpr, label=f"{_NAMES[name]} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("image-level ROC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _histograms_png(path: Path, curves: dict[str, np.ndarray], labels: np.ndarray,
                    rule: str) -> Path:
    fig, axes = plt.subplots(1, len(curves), figsize=(4.0 * len(curves), 3.2), squeeze=False)
    for ax, (name, s) in zip(axes[0], curves.items(), strict=True):
        s = np.asarray(s, float)
        ok = np.isfinite(s)
        # a log axis: the classifier's odds ratios run from 1e-6 to 1e6 around the threshold,
        # the autoencoder's ratios from 0.1 to 10; below 1e-3 a part is plainly good
        finite = np.clip(s[ok], HIST_LOW, None)
        if finite.size:
            bins = np.geomspace(HIST_LOW, max(finite.max(), 1.2), 40)
            ax.hist(finite[labels[ok] == 0], bins=bins, alpha=0.6, label="good")
            ax.hist(finite[labels[ok] == 1], bins=bins, alpha=0.6, label="defect")
        ax.set_xscale("log")
        ax.axvline(1.0, color="red", lw=1.2, label="threshold (1.0)")
        ax.set_title(f"{_NAMES[name]}" + (f" (rule {rule})" if name == "fused" else ""))
        ax.set_xlabel(f"normalized score (log; below {HIST_LOW:g} drawn at it)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _worst_items(samples: list[Sample], labels: np.ndarray, fused: np.ndarray,
                 fused_pred: np.ndarray, max_items: int) -> list[tuple[int, str]]:
    """The missed defects with the lowest and the false rejects with the highest fused
    score; without any, the closest calls."""
    order = np.argsort(np.where(np.isfinite(fused), fused, np.inf))
    missed = [i for i in order if labels[i] == 1 and not fused_pred[i]][:max_items]
    false_rej = [i for i in order[::-1] if labels[i] == 0 and fused_pred[i]][:max_items]
    items = [(int(i), f"MISSED {samples[i].defect_type} {samples[i].path.name} "
                      f"fused {score_text(fused[i])}") for i in missed]
    items += [(int(i), f"FALSE REJECT {samples[i].path.name} fused {score_text(fused[i])}")
              for i in false_rej]
    if not items:  # nothing missed: show the closest calls instead
        margin = np.abs(np.where(np.isfinite(fused), fused, 1e9) - 1.0)
        items = [(int(i), f"closest call {samples[i].defect_type} {samples[i].path.name} "
                          f"fused {score_text(fused[i])}") for i in np.argsort(margin)[:4]]
    return items


KINDS = ("autoencoder", "classifier", "fused")


def _types(result: dict) -> list[str]:
    """The defect types of the report's per-type blocks (``good`` apart)."""
    found: set[str] = set()
    for kind in KINDS:
        if result.get(kind):
            found |= set(result[kind]["per_defect_type"]) - {"good"}
    return sorted(found)


_PANELS = (("recall", "recall at the chosen threshold"),
           ("image_auroc", "image AUROC vs good parts"),
           ("aupro", "AUPRO of the map (does it land on the defect)"))


def _bars(ax, result: dict, kinds: list[str], types: list[str], key: str) -> None:
    """One group of bars per type, one bar per model that has ``key`` for it."""
    width = 0.8 / len(kinds)
    x = np.arange(len(types))
    for j, kind in enumerate(kinds):
        by = result[kind]["per_defect_type"]
        vals = [_num(by.get(t, {}).get(key)) for t in types]
        bars = ax.bar(x + (j - (len(kinds) - 1) / 2) * width, vals, width, label=_NAMES[kind])
        ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in vals],
                     fontsize=6, padding=1)
    ax.set_xticks(x, types, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.3)


def _per_type_png(path: Path, result: dict) -> Path | None:
    """Per defect type, grouped bars per model: recall at the chosen threshold, image AUROC
    of that type against the good parts, and the AUPRO of each model's map."""
    types, kinds = _types(result), [k for k in KINDS if result.get(k)]
    if not types:
        return None
    mapped = [k for k in kinds if k != "fused" and "aupro" in result[k]]
    panels = _PANELS if mapped else _PANELS[:2]
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(len(panels) * (1.5 + 0.8 * len(types)), 3.8))
    for ax, (key, name) in zip(axes[0], panels, strict=True):
        _bars(ax, result, mapped if key == "aupro" else kinds, types, key)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=3)
    frr = [f"{_NAMES[k]} {_num(result[k]['per_defect_type'].get('good', {}).get('false_reject_rate')):.3f}"
           for k in kinds]
    fig.suptitle("per defect type; good parts falsely rejected: " + ", ".join(frr), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _cell(v) -> str:
    return "  -  " if v is None or not np.isfinite(v) else f"{v:.3f}"


def per_type_table(result: dict) -> list[str]:
    """The per-type table ``station evaluate`` prints: per model, recall at the chosen
    threshold / image AUROC against the good parts (and pixel AUROC / AUPRO of its map)."""
    kinds = [k for k in KINDS if result.get(k)]
    types = _types(result)
    good = [result[k]["per_defect_type"].get("good") for k in kinds]
    if not types and not (kinds and all(good)):  # a batch of good parts alone: its rejects
        return []
    rows = [["defect type", "n"] + [_NAMES[k] for k in kinds]]
    for t in types:
        blocks = [result[k]["per_defect_type"].get(t, {}) for k in kinds]
        cells = []
        for b in blocks:
            cell = f"{_cell(b.get('recall'))} / {_cell(b.get('image_auroc'))}"
            if "pixel_auroc" in b:
                cell += f" [{_cell(b['pixel_auroc'])} / {_cell(b.get('aupro'))}]"
            cells.append(cell)
        rows.append([t, str(max(b.get("n", 0) for b in blocks))] + cells)
    if all(good):
        rows.append(["good: false rejects", str(good[0]["n"])]
                    + [_cell(g["false_reject_rate"]) for g in good])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["per defect type: recall at the threshold / image AUROC vs good parts "
            "[pixel AUROC / AUPRO of the map]"] + [
        "  ".join(c.rjust(w) if j == 1 else c.ljust(w)
                  for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in rows]


def write_report(out: Path, samples: list[Sample], labels: np.ndarray, scores: dict,
                 fused: np.ndarray, fused_pred: np.ndarray, rule: str,
                 result: dict | None = None, max_items: int = 8) -> list[Path]:
    """Write the report PNGs into ``out``; returns their paths. With the evaluation's
    ``result`` also the per-type bar chart, and the gallery follows its ``gallery`` rows."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path | None] = []
    curves = {k: v.normalized for k, v in scores.items()}
    curves["fused"] = fused
    if labels.min() == 0 and labels.max() == 1:
        written.append(_roc_png(out / "roc.png", curves, labels))
    written.append(_histograms_png(out / "histograms.png", curves, labels, rule))
    items = _worst_items(samples, labels, fused, fused_pred, max_items)
    written.append(_gallery(out / "worst_misses.png", items, samples, scores))
    result = result or {}
    verdicts = [r["verdict"] for r in result.get("per_image", [])] or None
    written.append(_type_gallery(out / "defect_gallery.png", result.get("gallery", []), samples,
                                 scores, fused,
                                 verdicts))
    if result:
        written.append(_per_type_png(out / "per_type.png", result))
    return [p for p in written if p is not None]
