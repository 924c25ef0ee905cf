"""``station evaluate --report DIR``: the pictures an engineer checks before trusting a model.

* ``roc.png``: ROC curves of the autoencoder, the classifier and the fused verdict;
* ``histograms.png``: normalized score histograms of good and defective images, with the
  threshold line at 1.0 (the fused panel uses the fused score, whose 1.0 is the rule);
* ``worst_misses.png``: the missed defects with the lowest and the false rejects with the
  highest fused score: the crop, its anomaly heatmap and the true defect outline;
* ``defect_gallery.png``: per defect type, the highest- and lowest-scored image with its
  heatmap, to see whether the heatmaps land on the defects.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from station.sources.datasets import Sample, load_mask  # noqa: E402
from training.metrics import roc_auc, roc_curve  # noqa: E402

_NAMES = {"autoencoder": "autoencoder", "classifier": "classifier", "fused": "fused"}


def _roc(scores, labels):
    fpr, tpr, _ = roc_curve(scores, labels)
    return fpr, tpr, roc_auc(scores, labels)


def _crop_mask(sample: Sample, scores, i: int) -> np.ndarray | None:
    """The sample's full-image mask warped into crop space (None without a mask)."""
    if sample.mask_path is None:
        return None
    cs = scores.crops
    shape = tuple(int(v) for v in cs.frame_shapes[i])
    gt = load_mask(sample.mask_path, shape, sample.path).astype(np.uint8) * 255
    height, width = cs.crops.shape[1:3]
    return cv2.warpAffine(gt, cs.frame_to_crop[i], (width, height), flags=cv2.INTER_NEAREST) > 0


def _panel(ax_img, ax_map, sample: Sample, scores, i: int, title: str) -> None:
    crop = scores.crops.crops[i]
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    ax_img.imshow(crop, cmap="gray", vmin=0, vmax=255)
    ax_img.set_title(title, fontsize=7)
    mask = _crop_mask(sample, scores, i)
    if mask is not None and mask.any():
        ax_img.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    if ax_map is not None and scores.maps is not None:
        ax_map.imshow(crop, cmap="gray", vmin=0, vmax=255)
        # one colour scale for every panel: red is at 1.5x the model's threshold
        ax_map.imshow(scores.maps[i], cmap="jet", alpha=0.5, vmin=0.0,
                      vmax=1.5 * scores.threshold)
        if mask is not None and mask.any():
            ax_map.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.6)
        ax_map.set_title(f"anomaly map (max {scores.maps[i].max() / scores.threshold:.2f} x thr)",
                         fontsize=7)
    for ax in (ax_img, ax_map):
        if ax is not None:
            ax.axis("off")


def _gallery(path: Path, items: list[tuple[int, str]], samples, scores, heat) -> Path | None:
    if not items:
        return None
    rows = len(items)
    cols = 2 if heat is not None else 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False)
    for r, (i, title) in enumerate(items):
        _panel(axes[r][0], axes[r][1] if cols == 2 else None, samples[i], heat or scores, i, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
        finite = s[np.isfinite(s)]
        if finite.size:
            bins = np.linspace(min(finite.min(), 0.0), max(finite.max(), 1.2), 40)
            ax.hist(finite[labels[np.isfinite(s)] == 0], bins=bins, alpha=0.6, label="good")
            ax.hist(finite[labels[np.isfinite(s)] == 1], bins=bins, alpha=0.6, label="defect")
        ax.axvline(1.0, color="red", lw=1.2, label="threshold (1.0)")
        ax.set_title(f"{_NAMES[name]}" + (f" (rule {rule})" if name == "fused" else ""))
        ax.set_xlabel("normalized score")
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
                      f"fused {fused[i]:.2f}") for i in missed]
    items += [(int(i), f"FALSE REJECT {samples[i].path.name} fused {fused[i]:.2f}")
              for i in false_rej]
    if not items:  # nothing missed: show the closest calls instead
        margin = np.abs(np.where(np.isfinite(fused), fused, 1e9) - 1.0)
        items = [(int(i), f"closest call {samples[i].defect_type} {samples[i].path.name} "
                          f"fused {fused[i]:.2f}") for i in np.argsort(margin)[:4]]
    return items


def _gallery_items(samples: list[Sample], s: np.ndarray) -> list[tuple[int, str]]:
    """Per defect type, the highest- and lowest-scored image (by the autoencoder)."""
    items = []
    for t in sorted({x.defect_type for x in samples} - {"good"}):
        idx = [i for i, x in enumerate(samples) if x.defect_type == t and np.isfinite(s[i])]
        if not idx:
            continue
        hi = max(idx, key=lambda i: s[i])
        lo = min(idx, key=lambda i: s[i])
        items.append((hi, f"{t} highest: ae {s[hi]:.2f}"))
        if lo != hi:
            items.append((lo, f"{t} lowest: ae {s[lo]:.2f}"))
    return items


def write_report(out: Path, samples: list[Sample], labels: np.ndarray, scores: dict,
                 fused: np.ndarray, fused_pred: np.ndarray, rule: str, max_items: int = 8
                 ) -> list[Path]:
    """Write the report PNGs into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    curves = {k: v.normalized for k, v in scores.items()}
    curves["fused"] = fused
    if labels.min() == 0 and labels.max() == 1:
        written.append(_roc_png(out / "roc.png", curves, labels))
    written.append(_histograms_png(out / "histograms.png", curves, labels, rule))
    heat = scores.get("autoencoder")
    base = heat or next(iter(scores.values()))
    items = _worst_items(samples, labels, fused, fused_pred, max_items)
    path = _gallery(out / "worst_misses.png", items, samples, base, heat)
    if path:
        written.append(path)
    if heat is not None:
        items = _gallery_items(samples, heat.normalized)
        path = _gallery(out / "defect_gallery.png", items, samples, heat, heat)
        if path:
            written.append(path)
    return written
