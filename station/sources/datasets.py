"""Data set readers and image loading, shared by training, ``replay`` and ``crops``.

Torch-free on purpose: the station's own commands read the same data sets the trainer does,
through the same code, so a sample means the same thing everywhere.

Three layouts are understood, autodetected by :func:`read_dataset`:

* **MVTec AD**: ``train/good/*``, ``test/good/*``, ``test/<defect type>/*`` and
  ``ground_truth/<defect type>/<stem>_mask.png`` (with no ``ground_truth/`` at all the defect
  images have no masks; with one, every defect image needs its mask).
* **Plain folders**: ``good/*`` and ``defect/*`` (sub-folders of ``defect/`` name defect types,
  images directly in ``defect/`` get the type ``defect``), with an optional ``masks/`` folder
  mirroring ``defect/`` (``masks/<type>/<stem>.png`` or ``<stem>_mask.png``).
* **CSV**: ``labels.csv`` with a header and the columns ``file,label`` and optionally
  ``defect_type``, ``mask``, ``split``; paths are relative to the CSV's folder, ``label`` is
  ``0``/``1`` (or ``good``/``defect``).

Plain-folder and CSV samples without a ``split`` column get the split ``"train"``: the data set
carries no hold-out of its own, so the trainer makes one.

Warnings (a mask without its image, a stray file, a defect image without its mask when
``strict=False``) are logged through ``logging.getLogger(__name__)`` *and* collected on the
returned :class:`SampleList`'s ``warnings`` attribute, so commands can print them.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = (
    "MVTec AD (train/good/, test/<type>/, ground_truth/<type>/<stem>_mask.png)",
    "plain folders (good/ and defect/[<type>/], optional masks/)",
    "CSV (labels.csv with columns file,label[,defect_type][,mask][,split])",
)
_SPLITS = ("train", "test")
# Files that commonly sit beside images and deserve no warning.
_QUIET_FILES = {"readme.txt", "readme.md", "license.txt", "provenance.md", "thumbs.db"}


class DatasetError(Exception):
    """A data set or image that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Sample:
    """One image of a data set and what it is known to show."""

    path: Path
    label: int  # 0 = good, 1 = defect
    defect_type: str  # "good" or the defect folder name
    mask_path: Path | None
    split: str  # "train" | "test"


class SampleList(list[Sample]):
    """The samples of a data set (sorted by path), plus what the reader noticed on the way.

    Behaves as a plain ``list[Sample]``; ``warnings`` holds the human-readable warnings,
    ``layout`` the detected layout (``"mvtec"``, ``"folders"``, ``"csv"`` or, when asked for,
    ``"images"``), ``root`` the folder.
    """

    def __init__(self, samples: Iterable[Sample], root: Path, layout: str, warnings: list[str]):
        super().__init__(samples)
        self.root = root
        self.layout = layout
        self.warnings = warnings


class _Reader:
    """Collects warnings while one layout is read; ``strict`` turns soft problems into errors."""

    def __init__(self, root: Path, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def problem(self, message: str) -> None:
        """A defect that ``strict`` refuses and non-strict reading only reports."""
        if self.strict:
            raise DatasetError(message)
        self.warn(message)

    def images(self, folder: Path) -> list[Path]:
        """Image files directly in ``folder`` (sorted); other files there are reported."""
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                continue
            if entry.suffix.lower() in IMAGE_EXTENSIONS:  # a pipe or a dangling link named
                found.append(entry)  # like an image too: reading it names what it is
            elif entry.is_file() and entry.name.lower() not in _QUIET_FILES:
                self.warn(f"{entry}: not an image ({', '.join(IMAGE_EXTENSIONS)}); ignored")
        return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _detect(root: Path) -> str | None:
    if (root / "labels.csv").is_file():
        return "csv"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "mvtec"
    if (root / "good").is_dir() or (root / "defect").is_dir():
        return "folders"
    return None


def _hint(root: Path) -> str:
    """For a folder of images given where a labeled set belongs: the set it sits in, if any."""
    try:
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir() if p.is_file()):
            return ""
    except OSError:
        return ""
    above = root.parent.parent if root.parent.name in _SPLITS else root.parent
    if above != root and _detect(above) is not None:
        return f" (this folder holds images only; the data set is probably {above})"
    return " (this folder holds images only, with no labels)"


def read_dataset(root: Path | str, strict: bool = True, images_as_good: bool = False
                 ) -> SampleList:
    """Read a data set in any known layout; sorted by path, deterministic.

    ``root`` is the data set folder (or a ``labels.csv`` file). ``strict=False`` turns a defect
    image without its mask into a warning (the sample keeps ``mask_path=None``).
    ``images_as_good``: a folder in no known layout that holds images itself (a product's
    ``train/good``, the folder ``station init-recipe`` measured) reads as good parts, layout
    ``"images"``; for looking at crops, where no labels are needed.
    Raises :class:`DatasetError` for a missing root, an unknown layout or an empty set.
    """
    root = Path(root)
    csv_path: Path | None = None
    if root.is_file() and root.suffix.lower() == ".csv":
        csv_path, root = root, root.parent
    if not root.exists():
        raise DatasetError(f"{root}: data set folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected a data set folder or a labels.csv)")
    layout = "csv" if csv_path else _detect(root)
    if layout is None and images_as_good:
        layout = "images"
    if layout is None:
        raise DatasetError(
            f"{root}: unknown data set layout; expected one of: " + "; ".join(LAYOUTS)
            + _hint(root)
        )
    reader = _Reader(root, strict)
    if layout == "csv":
        samples = _read_csv(reader, csv_path or root / "labels.csv")
    elif layout == "mvtec":
        samples = _read_mvtec(reader)
    elif layout == "images":
        samples = [Sample(p, 0, "good", None, "train") for p in reader.images(root)]
    else:
        samples = _read_folders(reader)
    if not samples:
        raise DatasetError(f"{root}: no images found ({layout} layout; extensions "
                           f"{', '.join(IMAGE_EXTENSIONS)})")
    samples.sort(key=lambda s: str(s.path))
    return SampleList(samples, root, layout, reader.warnings)


def _read_mvtec(reader: _Reader) -> list[Sample]:
    root = reader.root
    samples: list[Sample] = []
    train = root / "train"
    if train.is_dir():
        for sub in _subdirs(train):
            if sub.name != "good":
                reader.warn(f"{sub}: MVTec train/ holds only good/; folder ignored")
                continue
            samples += [Sample(p, 0, "good", None, "train") for p in reader.images(sub)]
    gt = root / "ground_truth"
    used_masks: set[Path] = set()
    test = root / "test"
    if test.is_dir() and not gt.is_dir() and any(s.name != "good" for s in _subdirs(test)):
        # labels without masks (a product nobody outlined): images are judged, maps are not
        reader.warn(f"{gt}: no such folder; the defect images have no masks, so the "
                    "evaluation reports no pixel metrics")
    if test.is_dir():
        for sub in _subdirs(test):
            for image in reader.images(sub):
                if sub.name == "good":
                    samples.append(Sample(image, 0, "good", None, "test"))
                    continue
                mask = _find_mask(gt / sub.name, image.stem) if gt.is_dir() else None
                if mask is not None:
                    used_masks.add(mask)
                elif gt.is_dir():
                    reader.problem(
                        f"{image}: defect image without its mask "
                        f"(expected {gt / sub.name / (image.stem + '_mask.png')})"
                    )
                samples.append(Sample(image, 1, sub.name, mask, "test"))
    if gt.is_dir():
        for sub in _subdirs(gt):
            for mask in reader.images(sub):
                if mask not in used_masks:
                    reader.warn(f"{mask}: mask without its image in {test / sub.name}; ignored")
    return samples


def _find_mask(folder: Path, stem: str) -> Path | None:
    """``<stem>_mask.<ext>`` first (MVTec), then ``<stem>.<ext>`` (plain mirror)."""
    for name in (stem + "_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            candidate = folder / (name + ext)
            if candidate.is_file():
                return candidate
    return None


def _read_folders(reader: _Reader) -> list[Sample]:
    root = reader.root
    samples: list[Sample] = []
    good = root / "good"
    if good.is_dir():
        samples += [Sample(p, 0, "good", None, "train") for p in reader.images(good)]
    defect = root / "defect"
    masks = root / "masks"
    used_masks: set[Path] = set()
    if defect.is_dir():
        groups = [(defect, "defect")] + [(sub, sub.name) for sub in _subdirs(defect)]
        for folder, dtype in groups:
            mirror = masks / folder.relative_to(defect)
            for image in reader.images(folder):
                mask = _find_mask(mirror, image.stem) if masks.is_dir() else None
                if mask is not None:
                    used_masks.add(mask)
                elif masks.is_dir():
                    reader.warn(f"{image}: no mask in {mirror} (masks are optional; "
                                "pixel metrics will skip this image)")
                samples.append(Sample(image, 1, dtype, mask, "train"))
    if masks.is_dir():
        for folder in [masks, *_subdirs(masks)]:
            for mask in reader.images(folder):
                if mask not in used_masks:
                    reader.warn(f"{mask}: mask without its image under {defect}; ignored")
    return samples


_LABELS = {"0": 0, "1": 1, "good": 0, "defect": 1, "ok": 0, "ng": 1}


def _read_csv(reader: _Reader, path: Path) -> list[Sample]:
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the CSV: {exc}") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise DatasetError(f"{path}:1: empty CSV; expected a header file,label[,defect_type][,mask]")
    columns = [h.strip().lower() for h in header]
    known = ("file", "label", "defect_type", "mask", "split")
    unknown = [c for c in columns if c not in known]
    if unknown or "file" not in columns or "label" not in columns:
        raise DatasetError(
            f"{path}:1: header {header}: expected the columns file,label and optionally "
            f"defect_type, mask, split" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    samples: list[Sample] = []
    seen: dict[Path, int] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        where = f"{path}:{line}"
        if len(row) != len(columns):
            raise DatasetError(f"{where}: {len(row)} fields, expected {len(columns)} "
                               f"({','.join(columns)})")
        rec = {c: v.strip() for c, v in zip(columns, row, strict=True)}
        samples.append(_csv_sample(rec, base, where, line, seen))
    return samples


# --- images -------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CUT = "PNG without its IEND end marker (truncated?)"
_JPEG_CUT = "JPEG without its end-of-image marker (truncated?)"


def _png_problem(data: bytes) -> str | None:
    """Walk the PNG chunks up to IEND: a file cut short or a chunk whose CRC does not match
    is named; bytes after IEND are allowed (cameras and tools sometimes append some)."""
    pos, n = len(_PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > n:
            return _PNG_CUT
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > n:
            return _PNG_CUT
        crc = int.from_bytes(data[end - 4:end], "big")
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
            return f"PNG chunk {name} at byte {pos} fails its CRC check (corrupt file)"
        if kind == b"IEND":
            return None
        pos = end


def _jpeg_entropy_end(data: bytes, pos: int) -> int | None:
    """Offset of the first marker after entropy-coded data starting at ``pos`` (None: none)."""
    n = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return None
        nxt = data[pos + 1]
        if nxt == 0xFF:  # fill byte
            pos += 1
        elif nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed zero or restart marker
            pos += 2
        else:
            return pos


def _jpeg_problem(data: bytes) -> str | None:
    """Walk the JPEG segments and scans up to the end-of-image marker (EOI).

    A file cut short has no EOI; bytes after the EOI are allowed (a valid JPEG with
    trailing data decodes completely). Markers are followed, not searched for, so an EOI
    inside an embedded thumbnail does not hide a truncated main image.
    """
    pos, n = 2, len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return _JPEG_CUT
        marker = data[pos + 1]
        if marker == 0xD9:
            return None
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 4 > n:
            return _JPEG_CUT
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if end > n:
            return _JPEG_CUT
        if marker == 0xDA:  # start of scan: entropy-coded data follows the header
            found = _jpeg_entropy_end(data, end)
            if found is None:
                return _JPEG_CUT
            end = found
        pos = end


def _truncated(data: bytes) -> str | None:
    """Why a file looks cut short or corrupt, or None. Decoders often return a partial image
    silently, so the structure of PNG and JPEG and the declared size of BMP are checked first."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_problem(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_problem(data)
    if data.startswith(b"BM") and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if len(data) < declared:
            return f"BMP is {len(data)} bytes but declares {declared} (truncated?)"
    return None


#: the largest image file read (a 20,000 x 20,000 16-bit colour TIFF is 2.4 GB uncompressed;
#: a frame from any camera the station runs is a few MB)
MAX_IMAGE_BYTES = 1 << 30


def regular_file(path: Path) -> None:
    """Refuse what is no image file before anything reads it: a FIFO blocks the read for
    ever, a device (/dev/zero) fills the memory. ``OSError`` when it cannot be looked at."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise DatasetError(f"{path}: not a regular file (a pipe, device or socket); "
                           "expected an image file")
    if info.st_size > MAX_IMAGE_BYTES:
        raise DatasetError(f"{path}: {info.st_size / 2**20:.0f} MB, larger than any image "
                           f"the station reads ({MAX_IMAGE_BYTES // 2**20} MB)")


def load_image(path: Path | str, mode: str = "keep") -> np.ndarray:
    """Read an image as stored (8- or 16-bit), raising :class:`DatasetError` naming the file.

    ``mode``: ``"keep"`` (grey stays 2-D, colour stays BGR; an alpha channel is dropped),
    ``"gray"`` (2-D) or ``"color"`` (3-channel BGR). The bit depth is kept; see :func:`to_uint8`.
    """
    if mode not in ("keep", "gray", "color"):
        raise ValueError(f"load_image mode = {mode!r}: expected 'keep', 'gray' or 'color'")
    path = Path(path)
    try:
        regular_file(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image: {exc.strerror or exc}") from None
    if not data:
        raise DatasetError(f"{path}: empty file (0 bytes)")
    reason = _truncated(data)
    if reason:
        raise DatasetError(f"{path}: {reason}")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise DatasetError(f"{path}: not a readable image (decoder refused the file)")
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: pixel type {image.dtype} not supported (8- or 16-bit only)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if mode == "gray" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif mode == "color" and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def to_uint8(image: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Bring an image to 8 bits: uint8 passes through; uint16 maps its full range (or the
    low ``bits`` bits, e.g. 12 for 12-bit sensors in a 16-bit container) onto 0..255."""
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ValueError(f"to_uint8: pixel type {image.dtype} not supported (uint8 or uint16)")
    top = (1 << (bits or 16)) - 1
    if not 8 <= (bits or 16) <= 16:
        raise ValueError(f"to_uint8: bits = {bits}: expected 8..16")
    scaled = image.astype(np.float32) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def load_mask(path: Path | str, shape: tuple[int, ...], image_path: Path | str | None = None
              ) -> np.ndarray:
    """Read a defect mask as a bool array (non-zero = defect) of the image's height x width.

    ``shape`` is the image's shape (only height and width are compared); ``image_path`` makes
    the size-mismatch message name the image too.
    """
    mask = load_image(path, mode="gray")
    h, w = int(shape[0]), int(shape[1])
    if mask.shape != (h, w):
        of = f" of {image_path}" if image_path is not None else ""
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image{of} is {w}x{h}"
        )
    return mask > 0


def load_sample(sample: Sample, mode: str = "keep") -> tuple[np.ndarray, np.ndarray | None]:
    """Image and mask (bool, or None when the sample has none) of one sample."""
    image = load_image(sample.path, mode)
    if sample.mask_path is None:
        return image, None
    return image, load_mask(sample.mask_path, image.shape, sample.path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        regular_file(path)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read for the fingerprint: {exc.strerror or exc}") from None
    return digest.hexdigest()


def dataset_fingerprint(samples: Iterable[Sample]) -> str:
    """``sha256:<hex>`` over every sample's relative path, label, type, split and the contents
    of its image and mask: the same data gives the same fingerprint wherever it is stored."""
    items = list(samples)
    if not items:
        raise DatasetError("dataset_fingerprint: no samples")
    paths = [str(s.path.resolve()) for s in items]
    paths += [str(s.mask_path.resolve()) for s in items if s.mask_path is not None]
    base = Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent
    if base.is_file():
        base = base.parent

    def rel(p: Path) -> str:
        return p.resolve().relative_to(base).as_posix()

    digest = hashlib.sha256()
    for s in sorted(items, key=lambda s: rel(s.path)):
        mask = f"{rel(s.mask_path)}:{_file_sha256(s.mask_path)}" if s.mask_path else "-"
        line = f"{rel(s.path)}\t{s.label}\t{s.defect_type}\t{s.split}\t{_file_sha256(s.path)}\t{mask}\n"
        digest.update(line.encode())
    return "sha256:" + digest.hexdigest()


def _csv_sample(rec: dict[str, str], base: Path, where: str, line: int,
                seen: dict[Path, int]) -> Sample:
    """One labels.csv row as a Sample; every problem named with its file:line and column."""
    label = _LABELS.get(rec["label"].lower())
    if label is None:
        raise DatasetError(f"{where}: label = {rec['label']!r}: expected 0 (good) or 1 (defect)")
    image = (base / rec["file"]).resolve() if rec["file"] else None
    if image is None or not image.is_file():
        raise DatasetError(f"{where}: file = {rec['file']!r}: image not found"
                           + (f" ({image})" if image else ""))
    if image.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DatasetError(f"{where}: file = {rec['file']!r}: not an image "
                           f"({', '.join(IMAGE_EXTENSIONS)})")
    if image in seen:
        raise DatasetError(f"{where}: file = {rec['file']!r}: already listed on line "
                           f"{seen[image]}")
    seen[image] = line
    dtype = rec.get("defect_type") or ("good" if label == 0 else "defect")
    if label == 0 and dtype != "good":
        raise DatasetError(f"{where}: defect_type = {dtype!r} on a good (label 0) row: "
                           "expected 'good' or empty")
    if label == 1 and dtype == "good":
        raise DatasetError(f"{where}: defect_type = 'good' on a defect (label 1) row")
    mask: Path | None = None
    if rec.get("mask"):
        mask = (base / rec["mask"]).resolve()
        if not mask.is_file():
            raise DatasetError(f"{where}: mask = {rec['mask']!r}: file not found ({mask})")
        if label == 0:
            raise DatasetError(f"{where}: mask = {rec['mask']!r} on a good (label 0) row")
    split = rec.get("split") or "train"
    if split not in _SPLITS:
        raise DatasetError(f"{where}: split = {split!r}: expected 'train' or 'test'")
    return Sample(image, label, dtype, mask, split)
