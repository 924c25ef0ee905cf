"""A simulated conveyor: frames of parts crossing a belt, with the truth for every part.

Why it exists: the demo and the tests run the real station (triggers, inspection, reject
timing) without a camera. Every frame is a pure function of ``(seed, index)``, so a test can
ask for any frame in any order and get the same pixels, and can check each verdict and trigger
against the truth (part id, good/defect, position).

Geometry: parts enter on one side, cross at ``speed_px_s`` and leave on the other, spaced
``pitch_px`` apart along the belt (with a little jitter), at any angle, always fully inside the
frame vertically. Part ``k`` (ids start at 1) has its centre at belt coordinate
``x = speed * t - (k - 1) * pitch - jitter_k`` (left to right; mirrored for right to left), so
part 1 is half in view at frame 0. Each part is rendered once into a sprite and pasted at whole
pixel positions, so it looks identical in every frame; ``PartTruth.center_xy`` is where it was
drawn (within 0.5 px of the continuous position that ``parts_between`` uses).

Real photos (``part_images``): each photo's part is cut out (divide by a heavy-blurred background
estimate, threshold, largest component, filled, slightly dilated), scaled so the part is about
``part_scale`` of the frame width long, turned by a random angle and carried like the synthetic
ones. Labels come from the folder layout: an image whose parent folder is the root itself or is
named ``good`` (e.g. ``train/good``, ``test/good``) is good (label 0); an image in any other
folder is defective (label 1) with that folder's name as its defect type (``test/scratch_head``
-> ``scratch_head``). ``ground_truth`` folders and ``*_mask`` files are ignored. So a plain
folder of photos is all good, and an MVTec AD category root gives its own labels. Each part
draws good/defect with ``defect_rate`` and then a photo with that label; when the folder has
none with that label, any photo is used and the truth follows the photo.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.sim import (
    BELT_LEVEL,
    DEFECT_TYPES,
    PartSprite,
    draw_appearance,
    part_extent,
    render_sprite,
)

DIRECTIONS = ("left_to_right", "right_to_left")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"

_SPACING_JITTER = 0.05  # of the pitch, either way
_LATERAL_JITTER = 0.08  # of the frame height, either way (limited so parts stay in view)
_BELT_PERIOD = 1024  # px; the belt texture repeats after this many pixels
_NOISE_PAD = 64


@dataclass(frozen=True)
class PartTruth:
    """What a part really is and where it is. ``defect`` is ``"good"`` for good parts."""

    part_id: int
    label: int  # 0 good, 1 defect
    defect: str
    center_xy: tuple[float, float]
    angle_deg: float  # tip-to-head direction, image coordinates (y down)
    fully_visible: bool


@dataclass(frozen=True)
class ConveyorFrame:
    """One camera frame and the truth for the parts (wholly or partly) in it, by id."""

    image: np.ndarray  # uint8 HxW (grey) or HxWx3 (BGR)
    seq: int
    timestamp: float  # seconds, index / fps
    parts: list[PartTruth]


@dataclass(frozen=True)
class _Plan:
    """Everything about one part that needs no rendering."""

    part_id: int
    label: int
    defect: str
    belt_offset: float  # px behind part 1's nominal position
    y: float
    angle_deg: float
    length: float
    photo: int | None  # index into the photo list (real-image mode)


@dataclass(frozen=True)
class PhotoEntry:
    """One real part photo and its label from the folder layout."""

    path: Path
    label: int
    defect: str


def list_part_photos(root: str | Path) -> list[PhotoEntry]:
    """All part photos under ``root`` with labels from the folder layout (see module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"part_images: {root} is not a folder")
    entries = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(root)
        if "ground_truth" in rel.parts[:-1] or path.stem.endswith("_mask"):
            continue
        parent = rel.parts[-2] if len(rel.parts) > 1 else ""
        if parent in ("", GOOD):
            entries.append(PhotoEntry(path, 0, GOOD))
        else:
            entries.append(PhotoEntry(path, 1, parent))
    if not entries:
        raise FileNotFoundError(
            f"part_images: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}"
        )
    return entries


def segment_part_photo(image: np.ndarray, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Cut the dark part out of a photo on a light background.

    Returns ``(mask, ratio)``: the part's mask (bool) and the photo divided by its background
    estimate (float32, ~1.0 on the background, same channels as ``image``), which makes the
    part independent of the photo's lighting. Raises ``ValueError`` naming ``source`` when no
    part is found.
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = gray.astype(np.float32)
    h, w = gray.shape
    scale = 128.0 / max(h, w)
    small = cv2.resize(gray, (max(int(w * scale), 8), max(int(h * scale), 8)),
                       interpolation=cv2.INTER_AREA)
    k = 2 * int(0.15 * max(small.shape)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    bg = cv2.GaussianBlur(bg, (0, 0), k / 4)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    bg = np.maximum(bg, 1.0)
    dark = ((gray / bg) < 0.8).astype(np.uint8)
    ks = max(3, 2 * int(max(h, w) / 400) + 1)
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((ks, ks), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n < 2:
        raise ValueError(f"{source}: no dark part found on the background")
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < 0.002 * h * w:
        raise ValueError(
            f"{source}: the largest dark region covers only {stats[best, cv2.CC_STAT_AREA]} px; "
            "expected a dark part on a light background"
        )
    part = (labels == best).astype(np.uint8)
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(part, contours, -1, 1, thickness=cv2.FILLED)
    part = cv2.dilate(part, np.ones((ks, ks), np.uint8))
    if image.ndim == 2:
        ratio = image.astype(np.float32) / bg
    else:
        ratio = image.astype(np.float32) / bg[..., None]
    return part.astype(bool), ratio


def _axis(mask: np.ndarray) -> tuple[tuple[float, float], float, float]:
    """Centre (midpoint of the extremes along the long axis), tip-to-head angle, length."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    mean = pts.mean(0)
    evals, evecs = np.linalg.eigh(np.cov((pts - mean).T))
    e = evecs[:, int(np.argmax(evals))]
    t = (pts - mean) @ e
    lo, hi = float(t.min()), float(t.max())
    end = 0.15 * (hi - lo)
    if np.count_nonzero(t < lo + end) > np.count_nonzero(t > hi - end):
        e, lo, hi = -e, -hi, -lo  # the wider (head) end is at +e
    c = mean + e * 0.5 * (lo + hi)
    return (float(c[0]), float(c[1])), math.degrees(math.atan2(e[1], e[0])), hi - lo


def photo_sprite(
    entry: PhotoEntry, length: float, turn_deg: float, color: bool
) -> PartSprite:
    """A belt sprite from one real photo: its part scaled to ``length`` px and turned."""
    image = cv2.imread(str(entry.path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"part_images: cannot read {entry.path} as an image")
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and not color:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 2 and color:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    pre = min(1.0, 512.0 / max(h, w))  # segment at a working size: fast, and plenty
    if pre < 1.0:
        image = cv2.resize(image, (int(w * pre), int(h * pre)), interpolation=cv2.INTER_AREA)
    mask, ratio = segment_part_photo(image, str(entry.path))
    (cx, cy), _, part_len = _axis(mask)
    scale = length / max(part_len, 1.0)
    alpha = mask.astype(np.float32)
    if abs(scale - 1.0) > 1e-3:  # scale first (area-averaged when shrinking), then turn
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        size = (max(int(round(alpha.shape[1] * scale)), 1), max(int(round(alpha.shape[0] * scale)), 1))
        alpha = cv2.resize(alpha, size, interpolation=interp)
        ratio = cv2.resize(ratio, size, interpolation=interp)
        cx, cy = (cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5
    # Turn about the part centre and put that centre in the middle of the sprite.
    half = int(math.ceil(0.5 * math.hypot(*alpha.shape))) + 4
    m = cv2.getRotationMatrix2D((cx, cy), -turn_deg, 1.0)
    m[0, 2] += half - cx
    m[1, 2] += half - cy
    size = (2 * half + 1, 2 * half + 1)
    alpha = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR)
    value = cv2.warpAffine(ratio, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7)
    ys, xs = np.nonzero(alpha > 0.01)
    x0, x1, y0, y1 = xs.min() - 2, xs.max() + 3, ys.min() - 2, ys.max() + 3
    alpha = np.ascontiguousarray(alpha[y0:y1, x0:x1])
    value = value[y0:y1, x0:x1]
    if value.ndim == 2:
        value = value[..., None]
    premult = np.clip(value * np.float32(BELT_LEVEL), 0.0, 1.0) * alpha[..., None]
    center, ang, plen = _axis(alpha > 0.5)
    return PartSprite(
        alpha, premult.astype(np.float32), np.zeros_like(alpha), center, ang, plen,
        None if entry.label == 0 else entry.defect,
    )


class SimulatedConveyor:
    """Frames of a belt carrying screw-like parts (synthetic, or cut from real photos)."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        speed_px_s: float = 240.0,
        pitch_px: float = 400,
        defect_rate: float = 0.3,
        seed: int = 0,
        color: bool = False,
        part_images: str | Path | None = None,
        direction: str = "left_to_right",
        part_length_px: float | None = None,
        part_scale: float = 0.5,
        defects: tuple[str, ...] | list[str] = DEFECT_TYPES,
        noise_sigma: float = 1.5,
    ) -> None:
        checks = (
            ("width", width, width >= 64), ("height", height, height >= 64),
            ("fps", fps, fps > 0), ("speed_px_s", speed_px_s, speed_px_s > 0),
            ("pitch_px", pitch_px, pitch_px > 0), ("defect_rate", defect_rate, 0 <= defect_rate <= 1),
            ("part_scale", part_scale, 0 < part_scale <= 1), ("noise_sigma", noise_sigma, 0 <= noise_sigma <= 2.5),
        )
        for name, value, ok in checks:
            if not ok:
                raise ValueError(f"SimulatedConveyor: {name}={value!r} is out of range")
        if direction not in DIRECTIONS:
            raise ValueError(
                f"SimulatedConveyor: direction={direction!r}; expected one of {', '.join(DIRECTIONS)}"
            )
        bad = [d for d in defects if d not in DEFECT_TYPES]
        if bad or not defects:
            raise ValueError(f"SimulatedConveyor: defects {list(defects)}; expected some of {list(DEFECT_TYPES)}")
        self.width, self.height = int(width), int(height)
        self.fps, self.speed_px_s, self.pitch_px = float(fps), float(speed_px_s), float(pitch_px)
        self.defect_rate, self.seed, self.color = float(defect_rate), int(seed), bool(color)
        self.direction = direction
        self.defects = tuple(defects)
        if part_length_px is None:
            base = part_scale * self.width if part_images is not None else 0.45 * self.width
            part_length_px = min(base, 0.72 * self.height, 0.72 * self.pitch_px)
        self.part_length_px = float(part_length_px)
        self._reach = 0.5 * self.part_length_px * 1.05 + 0.3 * self.part_length_px + 8
        if self.pitch_px * (1 - 2 * _SPACING_JITTER) < 1.1 * self.part_length_px + 16:
            raise ValueError(
                f"SimulatedConveyor: pitch_px={pitch_px} is too small for parts "
                f"{self.part_length_px:.0f} px long; use pitch_px >= "
                f"{(1.1 * self.part_length_px + 16) / (1 - 2 * _SPACING_JITTER):.0f}"
            )
        if 0.5 * self.height < 0.5 * self.part_length_px * 1.05 + 0.13 * self.part_length_px + 4:
            raise ValueError(
                f"SimulatedConveyor: parts {self.part_length_px:.0f} px long do not fit "
                f"{self.height} px high frames at every angle; set part_length_px smaller"
            )
        self.photos = list_part_photos(part_images) if part_images is not None else None
        self._plans: dict[int, _Plan] = {}
        self._sprites: OrderedDict[int, PartSprite] = OrderedDict()
        self._make_belt(noise_sigma)

    # ------------------------------------------------------------------ set-up

    def _make_belt(self, noise_sigma: float) -> None:
        """Belt texture (periodic, with dust that moves with it), fixed lighting, noise bank."""
        h, w, c = self.height, self.width, 3 if self.color else 1
        rng = np.random.default_rng([self.seed, 0xBE17])
        spec = np.fft.rfft2(rng.standard_normal((h, _BELT_PERIOD)))
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(_BELT_PERIOD)[None, :]
        spec *= np.exp(-(fx**2 + fy**2) / (2 * 0.01**2))  # smooth, periodic along the belt
        tex = np.fft.irfft2(spec, s=(h, _BELT_PERIOD))
        tex = tex / max(np.abs(tex).max(), 1e-9) * 0.015
        tex += rng.standard_normal(tex.shape) * 0.004
        belt = (BELT_LEVEL + tex).astype(np.float32)
        for _ in range(int(_BELT_PERIOD * h / 6000)):
            x, y = rng.uniform(0, _BELT_PERIOD), rng.uniform(0, h)
            r, strength = rng.uniform(0.6, 1.5), rng.uniform(0.2, 0.45)
            for dx in (0, _BELT_PERIOD, -_BELT_PERIOD):  # wrap at the period
                cv2.circle(belt, (int((x + dx) * 16), int(y * 16)), int(r * 16),
                           float(BELT_LEVEL * (1 - strength)), -1, cv2.LINE_AA, 4)
        # one period plus a frame's width, so any window of the frame's width fits (a frame
        # wider than the period repeats the texture)
        belt = np.tile(belt, (1, 1 + math.ceil(w / _BELT_PERIOD)))[:, : _BELT_PERIOD + w]
        if self.color:
            belt = belt[..., None] * np.array([1.02, 1.0, 0.98], np.float32)
        else:
            belt = belt[..., None]
        self._belt = np.ascontiguousarray(belt)
        ys = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
        xs = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
        light = 255.0 * (1.0 + 0.05 * xs - 0.03 * ys - 0.08 * (xs * xs + ys * ys))
        self._light = np.repeat(light.astype(np.float32)[..., None], c, axis=2)
        noise = rng.standard_normal((h + _NOISE_PAD, w + _NOISE_PAD, c), dtype=np.float32)
        self._noise = np.clip(noise, -3, 3) * np.float32(noise_sigma)

    # ------------------------------------------------------------------ parts

    def _plan(self, part_id: int) -> _Plan:
        plan = self._plans.get(part_id)
        if plan is not None:
            return plan
        rng = np.random.default_rng([self.seed, part_id, 7])
        label = int(rng.random() < self.defect_rate)
        defect = str(self.defects[int(rng.integers(len(self.defects)))]) if label else GOOD
        jitter = rng.uniform(-_SPACING_JITTER, _SPACING_JITTER) * self.pitch_px
        lateral = rng.uniform(-1.0, 1.0)
        angle = float(rng.uniform(0.0, 360.0))
        length = self.part_length_px * float(rng.uniform(0.96, 1.04))
        photo = None
        if self.photos is not None:
            pool = [i for i, e in enumerate(self.photos) if e.label == label] or list(
                range(len(self.photos))
            )
            photo = pool[int(rng.integers(len(pool)))]
            label, defect = self.photos[photo].label, self.photos[photo].defect
        half = 0.5 * length * 1.05 + 0.13 * length + 4  # worst case over all angles
        room = max(0.5 * self.height - half, 0.0)
        y = 0.5 * self.height + lateral * min(_LATERAL_JITTER * self.height, room)
        plan = _Plan(part_id, label, defect, (part_id - 1) * self.pitch_px + jitter, y, angle,
                     length, photo)
        self._plans[part_id] = plan
        return plan

    def sprite(self, part_id: int) -> PartSprite:
        """The part's rendered sprite (rendered once, then cached)."""
        sprite = self._sprites.get(part_id)
        if sprite is not None:
            self._sprites.move_to_end(part_id)
            return sprite
        plan = self._plan(part_id)
        rng = np.random.default_rng([self.seed, part_id, 11])
        if self.photos is not None and plan.photo is not None:
            sprite = photo_sprite(self.photos[plan.photo], plan.length, plan.angle_deg, self.color)
        else:
            defect = None if plan.label == 0 else plan.defect
            sprite = render_sprite(rng, plan.length, plan.angle_deg, defect, self.color)
        self._sprites[part_id] = sprite
        while len(self._sprites) > 12:
            self._sprites.popitem(last=False)
        return sprite

    def _x(self, plan: _Plan, t: float) -> float:
        """Continuous centre x of a part at time t, in image coordinates."""
        x = self.speed_px_s * t - plan.belt_offset
        return x if self.direction == "left_to_right" else (self.width - 1) - x

    def crossing_time(self, part_id: int, line_x: float | None = None) -> float:
        """When the part's centre crosses the vertical line x = line_x (default: mid-frame)."""
        line = 0.5 * self.width if line_x is None else float(line_x)
        if self.direction == "right_to_left":
            line = (self.width - 1) - line
        return (line + self._plan(part_id).belt_offset) / self.speed_px_s

    def _ids_near(self, x_belt_lo: float, x_belt_hi: float) -> range:
        """Part ids whose belt offset could put them between two belt-coordinate positions."""
        lo = math.floor(x_belt_lo / self.pitch_px) - 1
        hi = math.ceil(x_belt_hi / self.pitch_px) + 2
        return range(max(lo, 1), max(hi, 1))

    def _visible(self, sprite: PartSprite, ox: int, oy: int) -> bool:
        x0, y0, x1, y1 = sprite.box
        return ox + x0 >= 0 and oy + y0 >= 0 and ox + x1 <= self.width and oy + y1 <= self.height

    def _truth(self, plan: _Plan, x: float, sprite: PartSprite) -> tuple[PartTruth, int, int]:
        ox = int(math.floor(x - sprite.center[0] + 0.5))
        oy = int(math.floor(plan.y - sprite.center[1] + 0.5))
        truth = PartTruth(
            plan.part_id, plan.label, plan.defect,
            (ox + sprite.center[0], oy + sprite.center[1]), sprite.angle_deg,
            self._visible(sprite, ox, oy),
        )
        return truth, ox, oy

    def parts_between(self, t0: float, t1: float, line_x: float | None = None) -> list[PartTruth]:
        """Truth for every part whose centre crosses x = line_x in [t0, t1), in crossing order.

        ``center_xy`` is the continuous position at the crossing (x = line_x).
        """
        line = 0.5 * self.width if line_x is None else float(line_x)
        out = []
        for pid in self._ids_near(self.speed_px_s * t0 - self.width, self.speed_px_s * t1 + self.width):
            t = self.crossing_time(pid, line)
            if t0 <= t < t1:
                plan = self._plan(pid)
                if self.photos is None:  # known without rendering: fast over long intervals
                    app = draw_appearance(np.random.default_rng([self.seed, pid, 11]), self.color)
                    hx, hy = part_extent(app, plan.length, plan.angle_deg)
                    visible = (line - hx >= 0 and line + hx <= self.width
                               and plan.y - hy >= 0 and plan.y + hy <= self.height)
                    angle = plan.angle_deg
                else:
                    truth, _, _ = self._truth(plan, line, self.sprite(pid))
                    visible, angle = truth.fully_visible, truth.angle_deg
                out.append(PartTruth(pid, plan.label, plan.defect, (line, plan.y), angle, visible))
        return out

    def part_truth(self, part_id: int) -> PartTruth:
        """Label and defect of a part (position: where it crosses mid-frame)."""
        if part_id < 1:
            raise ValueError(f"SimulatedConveyor.part_truth: part ids start at 1, got {part_id}")
        t = self.crossing_time(part_id)
        return next(p for p in self.parts_between(t, math.nextafter(t, math.inf))
                    if p.part_id == part_id)

    # ------------------------------------------------------------------ frames

    def frame(self, index: int) -> ConveyorFrame:
        """Frame ``index`` (a pure function of seed and index)."""
        if index < 0:
            raise ValueError(f"SimulatedConveyor.frame: index must be >= 0, got {index}")
        t = index / self.fps
        travel = self.speed_px_s * t
        shift = int(math.floor(travel + 0.5)) % _BELT_PERIOD
        start = (-shift) % _BELT_PERIOD if self.direction == "left_to_right" else shift
        canvas = self._belt[:, start : start + self.width].copy()
        parts = []
        for pid in self._ids_near(travel - self.width - self._reach, travel + self._reach):
            plan = self._plan(pid)
            x = self._x(plan, t)
            if x < -self._reach or x > self.width + self._reach:
                continue
            sprite = self.sprite(pid)
            truth, ox, oy = self._truth(plan, x, sprite)
            sprite.composite(canvas, ox, oy)
            x0, _, x1, _ = sprite.box
            if ox + x1 > 0 and ox + x0 < self.width:  # some of the part itself is in view
                parts.append(truth)
        cv2.multiply(canvas, self._light, dst=canvas)
        oy, ox = (index * 53 + self.seed * 7 + 29) % _NOISE_PAD, (index * 37 + 11) % _NOISE_PAD
        canvas += self._noise[oy : oy + self.height, ox : ox + self.width]
        image = cv2.convertScaleAbs(canvas)  # rounds and saturates to 0..255
        if not self.color:
            image = image.reshape(self.height, self.width)
        return ConveyorFrame(image, index, t, parts)

    def frames(self, count: int, start: int = 0) -> Iterator[ConveyorFrame]:
        """``count`` consecutive frames from ``start``."""
        for i in range(start, start + count):
            yield self.frame(i)

    def __iter__(self) -> Iterator[ConveyorFrame]:
        """Frames 0, 1, 2, ... without end (the belt never stops)."""
        i = 0
        while True:
            yield self.frame(i)
            i += 1
