"""Is this a usable hand radiograph? One check before every estimate: fix what is safe, refuse the rest.

`check(img, model, input_side)` takes the decoded 2-D image (uint8, or float in [0, 1]) and returns a `Verdict`:
the image to estimate from (cropped to the radiograph inside a uniform frame and/or turned upright), the
corrections made, or why it is refused. Everything is measured on a thumbnail (longer side MEDIUM px), so it costs
about a millisecond whatever the image's size (docs/QUALITY.md). In order:
1. intensity: too dark or too flat (limits below every training image's);
2. a uniform frame on all four sides (a radiograph inset in a border): cropped, or refused when what is inside is
   too small to read;
3. sharpness: refused when far blurrier than any training image;
4. tilt, without a fitted tilt network: the hand's axis from image moments; from TILT_WARN off the nearest side a
   warning, from TILT_MIN the image is straightened (never, as shipped);
5. with the bundle's fitted `QualityModel` (bundle.json "quality", written by `python benchmarks/ood_suite.py fit`,
   `fit-orientation`, `fit-laterality` and `fit-tilt`): two hands side by side (a wide image whose halves each read
   as a hand: refused), which way the image lies (a small network over its eight turned and inverted views: turned
   upright when sure; refused when inverted), how far the upright hand lies tilted (a second small network: warned
   from TILT_NET_WARN degrees, read as it lies), whether it looks like a whole hand radiograph at all (a linear
   classifier; refused below its limit, which is set on validation images), and which hand (a right hand is
   mirrored to the left the network was trained on).
A bundle without a "quality" section gets steps 1-4 only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from PIL import Image

from edge.bundle import BundleError

MEDIUM = 96  # px, longer side of the thumbnail everything is measured on
THUMB = 24  # px, side of the square (squashed, like the network's input) layout thumbnail
# Frame: rows and columns at the edges that stay within FRAME_TOL of the corners' grey value (but for FRAME_MARK
# of their pixels: labels and marks on the frame) are frame; cropped when all four sides have FRAME_MIN of it.
FRAME_TOL = 0.04
FRAME_MARK = 0.05
FRAME_MIN = 0.04
MIN_CONTENT = 0.25  # the radiograph inside a frame must have at least this fraction of the network's input side
TWO_HANDS_ASPECT = 1.25  # width / height from which an image may hold two hands side by side (one is ~0.75)
# Limits under every image of the training split (docs/QUALITY.md has the measured minima).
DARK_P99 = 0.07  # the brightest 1% of the image below this (of full scale): too dark (training minimum 0.12)
FLAT_RANGE = 0.035  # 99th - 1st percentile below this: too flat (training minimum 0.06)
BLUR_MIN = 0.055  # sharpness() below this: too blurred (training minimum 0.07)
NOISE_MAX = 1.0  # sharpness() above this: noise, not a radiograph (training 99.9% quantile 0.57, maximum 1.94)
# Tilt (docs/QUALITY.md: set on validation images): a hand axis TILT_WARN off the nearest side is warned about,
# TILT_MIN off it is turned square. Straightening is off (90: never): the network reads a straightened copy 3-5
# months from the upright one, and straightening from 30 degrees cost 600 usable validation images 0.12 months
# against reading them unchecked, where warning and reading as they lie cost nothing.
TILT_WARN = 30.0  # degrees; upright validation images lean 10 at the median, 24.5 at the 90th percentile
TILT_MIN = 90.0  # degrees: never (an axis is at most 45 off the nearest side)
AXIS_MIN = 0.05  # elongation under which the axis has no direction (validation 1st percentile 0.058): warned about
# With a fitted tilt network (QualityModel.tilt) the hand's tilt from upright is read off the upright thumbnail
# instead of the axis above: from TILT_NET_WARN degrees a warning (set on validation, docs/QUALITY.md: 1.2% of
# upright images warned, 98% of hands tilted 40-50 degrees).
TILT_NET_WARN = 15.0
TILT_SCALE = 30.0  # degrees per unit of the tilt network's output
HOG_CELLS, HOG_BINS, HIST_BINS = 4, 8, 16
ORIENTATIONS = {0: "", 1: "rotated 90 degrees clockwise", 2: "rotated 180 degrees", 3: "rotated 90 degrees anticlockwise"}


@dataclass(frozen=True)
class Verdict:
    image: np.ndarray | None  # what to estimate from; None when refused
    corrections: tuple[str, ...] = ()
    rejection: str = ""  # why it is refused; "" when accepted

    @property
    def accepted(self) -> bool:
        return not self.rejection


@dataclass(frozen=True)
class QualityModel:
    """Fitted on the training split's radiographs (`python benchmarks/ood_suite.py fit`):
    - `orient`: a small convolutional network (orient_scores) that scores one view of a THUMB px thumbnail as
      upright, trained so that the upright, uninverted view of a training image scores highest of its eight views
      (four quarter turns, each inverted or not). An image is turned back when one turned view has softmax
      probability `turn` or more, and is inverted when the inverted views together have `invert` or more.
    - `hand`: a logistic classifier over `hand_features` (standardised by `hand_mean`, `hand_std`; bias last):
      training radiographs against generated images and parts and blurs of training radiographs. Below `reject`
      (set on validation images) the upright view is not a whole, readable hand radiograph."""

    orient: tuple[np.ndarray, ...]  # conv1 w, b, conv2 w, b, conv3 w, b, linear w, b (torch's layouts)
    hand: np.ndarray
    hand_mean: np.ndarray
    hand_std: np.ndarray
    reject: float
    turn: float = 0.5
    invert: float = 0.9
    fitted_on: dict = field(default_factory=dict)
    laterality: np.ndarray | None = None  # over the standardised hand features, bias last: > 0 reads as a right hand
    tilt: tuple[np.ndarray, ...] | None = None  # orient_scores' network, reading degrees of tilt / TILT_SCALE

    def tilt_degrees(self, thumb: np.ndarray) -> float:
        """How far the upright thumbnail's hand lies turned from the upright training pose (degrees, anticlockwise
        positive; 0 without the tilt network)."""
        return 0.0 if self.tilt is None else float(orient_scores(self.tilt, thumb[None])[0]) * TILT_SCALE

    def views(self, thumb: np.ndarray) -> np.ndarray:
        """Probabilities of the eight views (turns 0-3 anticlockwise, then the same inverted) being upright."""
        logits = orient_scores(self.orient, views(thumb)).astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def hand_score(self, medium: "np.ndarray | Measures") -> float:
        z = (_features(medium) - self.hand_mean) / self.hand_std
        return float(z @ self.hand[:-1] + self.hand[-1])

    def right_hand(self, medium: "np.ndarray | Measures") -> float:
        """The laterality logit of an upright image: above 0 it reads as a right hand (0 without the weights)."""
        if self.laterality is None:
            return 0.0
        z = (_features(medium) - self.hand_mean) / self.hand_std
        return float(z @ self.laterality[:-1] + self.laterality[-1])

    def to_dict(self) -> dict:
        r = lambda a: np.round(np.asarray(a, np.float64), 5).tolist()  # noqa: E731 (5 digits: a small bundle.json)
        extra = {} if self.laterality is None else {"laterality": r(self.laterality)}
        extra |= {} if self.tilt is None else {"tilt": [r(a) for a in self.tilt]}
        return {"thumb": THUMB, "medium": MEDIUM, "orient": [r(a) for a in self.orient], "hand": r(self.hand),
                "hand_mean": r(self.hand_mean), "hand_std": r(self.hand_std), "reject": round(float(self.reject), 4),
                "turn": self.turn, "invert": self.invert, **extra, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> "QualityModel":
        if (d.get("thumb"), d.get("medium")) != (THUMB, MEDIUM):
            raise ValueError(f"the bundle's quality model is for {d.get('thumb')}/{d.get('medium')} px thumbnails, "
                             f"this runtime uses {THUMB}/{MEDIUM}: re-run `python benchmarks/ood_suite.py fit`")
        f32 = lambda key: np.asarray(d[key], np.float32)  # noqa: E731
        if not isinstance(d.get("orient", [None])[0], list):  # the linear orientation weights of bundles before 9.0
            raise ValueError("the bundle's quality model has linear orientation weights, this runtime a network: "
                             "re-run `python benchmarks/ood_suite.py fit`")
        net = lambda key: tuple(np.asarray(a, np.float32) for a in d[key])  # noqa: E731
        return cls(net("orient"), f32("hand"), f32("hand_mean"), f32("hand_std"), float(d["reject"]),
                   float(d["turn"]), float(d["invert"]), d.get("fitted_on", {}),
                   f32("laterality") if "laterality" in d else None,
                   net("tilt") if "tilt" in d else None)


def quality_model(bundle) -> QualityModel | None:
    """The bundle's fitted model, or None when its bundle.json has no "quality" section; a section this runtime
    cannot read is a BundleError naming the bundle.json."""
    section = bundle.meta.get("quality")
    if not section:
        return None
    try:
        return QualityModel.from_dict(section)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        why = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise BundleError(f"{bundle.root / 'bundle.json'}: \"quality\": {why}") from None


def check(img: np.ndarray, model: QualityModel | None, input_side: int) -> Verdict:
    """A decoded 2-D image -> Verdict. input_side: the network's input side, to judge what a crop leaves."""
    medium, scale = _medium(img)
    m = Measures(medium)
    reason = _intensity_problem(*m.percentiles)
    if reason:
        return Verdict(None, rejection=reason)
    corrections = []
    box = frame_box(medium)
    if box is not None:
        top, bottom, left, right = _refine(img, box, scale, _frame_value(medium))
        if min(bottom - top, right - left) < MIN_CONTENT * input_side:
            return Verdict(None, rejection=f"too little of the image is radiograph ({right - left}x{bottom - top} px "
                                           "inside a uniform border)")
        img, m = img[top:bottom, left:right], Measures(medium[box[0]:box[1], box[2]:box[3]])
        corrections.append(f"cropped a uniform border (kept {img.shape[1]}x{img.shape[0]} px)")
    sharp = m.sharpness
    if sharp < BLUR_MIN:
        return Verdict(None, rejection="too blurred to read the bones")
    if sharp > NOISE_MAX:
        return Verdict(None, rejection=f"noise, not a radiograph (fine detail {sharp:.1f}, radiographs at most {NOISE_MAX})")
    if model is not None and model.tilt is not None:
        return _judge(img, m, model, corrections)  # the tilt read off the upright view there
    straight, sm, said, off = straighten(img, m)
    verdict = _judge(straight, sm, model, corrections + said)
    if not verdict.accepted and straight is not img:
        # The hand classifier was fitted on radiographs as they lie, corners and all: a straightened image it
        # refuses is read as it lies instead, if it passes so, with a warning (never silently).
        as_it_lies = _judge(img, m, model, corrections + [f"warning: the hand lies tilted about {abs(off):.0f} "
                                                          "degrees and was read as it lies: check the reading"])
        if as_it_lies.accepted:
            return as_it_lies
    return verdict


def _judge(img: np.ndarray, m: "Measures", model: QualityModel | None, corrections: list[str]) -> Verdict:
    """The fitted model's steps on a (cropped, straightened) image: more than one hand, which way it lies, whether it
    is a whole hand radiograph, which hand."""
    if model is not None:
        if two_hands(m, model):
            return Verdict(None, rejection="more than one hand (two radiographs side by side): give one hand per "
                                           "image")
        turns, reason, upright = orientation(m, model)
        if reason:
            return Verdict(None, rejection=reason)
        if turns:
            img = np.rot90(img, turns)  # np.rot90 turns anticlockwise
            corrections.append(f"turned upright (it was {ORIENTATIONS[turns]})")
        tilted = abs(model.tilt_degrees(upright.thumb))
        if tilted >= TILT_NET_WARN:
            corrections.append(f"warning: the hand lies tilted (about {tilted:.0f} degrees) and was read as it lies: "
                               "check the reading")
        if model.right_hand(upright) > 0:
            img = img[:, ::-1]
            corrections.append("mirrored (it looks like a right hand: read as the left hand the model was trained on)")
    return Verdict(np.ascontiguousarray(img), tuple(corrections))


def straighten(img: np.ndarray, m: "Measures") -> tuple[np.ndarray, "Measures", list[str], float]:
    """A hand whose axis lies TILT_MIN or more off the nearest side of the image, turned square to it (the
    orientation step then turns it upright): the image, its measures, what was said and the axis' angle from the
    nearest side (degrees, anticlockwise positive). From TILT_WARN, and for an axis too short to trust (elongation
    under AXIS_MIN), the image is read as it lies with a warning."""
    angle, elongation = m.axis
    # -45 to 45, whole degrees: a turned or mirrored copy of an image (whose moments differ by rounding) is
    # straightened by the same angle, so it is read exactly as the image is
    off = float(round((angle + 45) % 90 - 45))
    if abs(off) < TILT_WARN:
        return img, m, [], off
    if abs(off) < TILT_MIN or elongation < AXIS_MIN:
        return img, m, [f"warning: the hand may lie tilted (about {abs(off):.0f} degrees) and was read as it lies: "
                        "check the reading"], off
    turned = Measures(_rotate(m.medium, -off, _frame_value(m.medium)))
    unit = 255 if img.dtype == np.uint8 else 1
    return (_rotate(img, -off, _frame_value(m.medium) * unit), turned,
            [f"straightened (turned {abs(off):.0f} degrees {'clockwise' if off > 0 else 'anticlockwise'}: the hand "
             "lay tilted)"], off)


def _rotate(img: np.ndarray, degrees: float, fill: float) -> np.ndarray:
    """img turned `degrees` anticlockwise about its centre, same size, bilinear; what comes in is `fill`."""
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).rotate(degrees, Image.Resampling.BILINEAR, fillcolor=int(round(fill))))
    pil = Image.fromarray(np.ascontiguousarray(img, np.float32), "F")
    return np.asarray(pil.rotate(degrees, Image.Resampling.BILINEAR, fillcolor=float(fill)), np.float32)


def hand_axis(medium: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The hand's long axis from the second moments of what is brighter than the median (bone and soft tissue
    against the background): (angle from the vertical in degrees, anticlockwise positive, -90 to 90; elongation
    0 (round) to 1 (a line))."""
    w = np.clip((medium - lo) / max(hi - lo, 1e-6), 0, 1)
    total = float(w.sum())
    if total <= 0:
        return 0.0, 0.0
    # moments from the row and column sums (two matrix-vector products instead of five image-sized ones)
    y, x = np.arange(medium.shape[0], dtype=np.float64), np.arange(medium.shape[1], dtype=np.float64)
    rows, cols = w.sum(axis=1, dtype=np.float64), w.sum(axis=0, dtype=np.float64)
    cy, cx = rows @ y / total, cols @ x / total
    myy, mxx = rows @ (y - cy) ** 2, cols @ (x - cx) ** 2
    mxy = float((y - cy) @ w.astype(np.float64) @ (x - cx))
    # y grows downwards: an axis leaning anticlockwise from the vertical has x falling as y falls (mxy > 0)
    angle = 0.5 * np.degrees(np.arctan2(2 * mxy, myy - mxx))
    return float(angle), float(np.hypot(myy - mxx, 2 * mxy) / max(myy + mxx, 1e-9))


def two_hands(m: "Measures", model: QualityModel) -> bool:
    """A wide image whose left and right halves each read as a whole hand radiograph (P(hand) > 0.5): the hand
    classifier was fitted with parts of radiographs as negatives, so half of one hand does not pass. Measured in
    docs/QUALITY.md: two test radiographs side by side, and one radiograph turned on its side (wide too)."""
    h, w = m.medium.shape
    if w < TWO_HANDS_ASPECT * h:
        return False
    return all(model.hand_score(half) > 0 for half in (m.medium[:, :w // 2], m.medium[:, w // 2:]))


def orientation(m: "Measures", model: QualityModel) -> tuple[int, str, "Measures"]:
    """The (cropped) thumbnail's measures -> (anticlockwise quarter turns that make it upright, refusal reason or
    "", the upright view's measures)."""
    p = model.views(m.thumb)
    inverted = p[4:].sum() >= model.invert
    ps = p[4:] if inverted else p[:4]
    turns = int(np.argmax(ps)) if ps.max() >= model.turn else 0
    upright = Measures(np.rot90(1 - m.medium if inverted else m.medium, turns)) if inverted or turns else m
    score = model.hand_score(upright)
    # Inverted is said only of what reads as a hand once inverted back (P(hand) > 0.5): a photograph can look
    # "inverted" to the orientation network, and is refused either way. A turned image is held to the hand limit
    # an upright one is held to (before the orientation network, a turn needed P(hand) > 0.5, which refused 1% of
    # turned radiographs; docs/QUALITY.md has what it does to the out-of-distribution suite).
    if score < model.reject or (inverted and score < 0):
        return 0, f"does not look like a whole hand radiograph (score {score:.1f}, limit {model.reject:.1f})", upright
    if inverted:
        return 0, f"inverted: bone dark, background bright (P {p[4:].sum():.2f})", upright
    return turns, "", upright


def _medium(img: np.ndarray) -> tuple[np.ndarray, float]:
    """The image as float32 in [0, 1], longer side about MEDIUM px (box-averaged), and the factor back."""
    h, w = img.shape
    step = max(1, max(h, w) // (4 * MEDIUM))  # subsample big images first: a box filter over 5 MP costs ms
    small = img[::step, ::step]
    f = MEDIUM / max(small.shape)
    size = (max(1, round(small.shape[1] * f)), max(1, round(small.shape[0] * f)))
    u8 = small.dtype == np.uint8
    pil = Image.fromarray(np.ascontiguousarray(small)) if u8 else Image.fromarray(small.astype(np.float32), "F")
    out = np.asarray(pil.resize(size, Image.Resampling.BOX), np.float32)
    return (out / 255.0 if u8 else out), h / out.shape[0]


class Measures:
    """What the check reads off one medium thumbnail, each computed once when first needed (several steps and the
    hand classifier share them)."""

    def __init__(self, medium: np.ndarray):
        self.medium = medium

    @cached_property
    def percentiles(self) -> tuple[np.float64, np.float64]:
        """The 1st and 99th percentiles (np.percentile's linear interpolation, from a partial sort)."""
        return self._percentiles[0], self._percentiles[2]

    @cached_property
    def _percentiles(self) -> tuple[np.float64, ...]:
        """The 1st, 50th, 99th and 99.5th percentiles, from one partial sort."""
        return percentiles(self.medium, 1, 50, 99, 99.5)

    @cached_property
    def sharpness(self) -> float:
        return sharpness(self.medium)

    @cached_property
    def features(self) -> np.ndarray:
        return hand_features(self)

    @cached_property
    def axis(self) -> tuple[float, float]:
        return hand_axis(self.medium, self._percentiles[1], self._percentiles[3])

    @cached_property
    def thumb(self) -> np.ndarray:
        return thumbnail(self.medium)

    @cached_property
    def layout(self) -> np.ndarray:
        return layout_features(self.thumb[None])[0]


def percentiles(a: np.ndarray, *qs: float) -> tuple[np.float64, ...]:
    """np.percentile(a, qs) (its default linear method) from one np.partition: a third of its time on a
    thumbnail."""
    flat = a.ravel()
    at = [q / 100 * (flat.size - 1) for q in qs]
    lo = [int(np.floor(x)) for x in at]
    hi = [min(k + 1, flat.size - 1) for k in lo]
    part = np.partition(flat, sorted(set(lo + hi)))
    # float64, as np.percentile returns: the histogram's bins are then cut in float64 too (pixels sit on their edges)
    return tuple(np.float64(part[k]) + (np.float64(part[j]) - np.float64(part[k])) * (x - k)
                 for x, k, j in zip(at, lo, hi))


def _intensity_problem(lo: float, hi: float) -> str:
    if hi < DARK_P99:
        return f"too dark (the brightest 1% is below {hi:.2f} of full scale)"
    if hi - lo < FLAT_RANGE:
        return f"too flat (contrast {hi - lo:.3f} of full scale)"
    return ""


def _frame_value(medium: np.ndarray) -> float:
    """The median of the four corners (the mean of the middle two)."""
    corners = sorted(float(v) for v in (medium[0, 0], medium[0, -1], medium[-1, 0], medium[-1, -1]))
    return (corners[1] + corners[2]) / 2


def frame_box(medium: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) in `medium` of what lies inside a uniform frame on all four sides, or None."""
    h, w = medium.shape
    off = np.abs(medium - _frame_value(medium)) > FRAME_TOL
    rows, cols = np.count_nonzero(off, axis=1) > FRAME_MARK * w, np.count_nonzero(off, axis=0) > FRAME_MARK * h
    if not rows.any() or not cols.any():
        return None
    top, bottom = int(np.argmax(rows)), h - int(np.argmax(rows[::-1]))
    left, right = int(np.argmax(cols)), w - int(np.argmax(cols[::-1]))
    if min(top, h - bottom) < FRAME_MIN * h or min(left, w - right) < FRAME_MIN * w:
        return None
    return top, bottom, left, right


def _refine(img: np.ndarray, box, scale: float, value: float) -> tuple[int, int, int, int]:
    """The medium image's frame box in full-resolution pixels, each edge found again on the full image's own rows
    and columns near it (a medium pixel is `scale` full pixels), so a crop gives back the inset image exactly."""
    unit = 255.0 if img.dtype == np.uint8 else 1.0
    reach = int(np.ceil(scale)) + 1

    def first_inside(lines, start: int, stop: int, step: int) -> int:
        for i in range(start, stop, step):
            if (np.abs(lines[i] / unit - value) > FRAME_TOL).mean() > FRAME_MARK:
                return i
        return stop - step

    h, w = img.shape
    top, bottom, left, right = (round(v * scale) for v in box)
    top = first_inside(img, max(0, top - reach), min(h, top + reach), 1)
    bottom = first_inside(img, min(h - 1, bottom + reach), max(top, bottom - reach - 1), -1) + 1
    left = first_inside(img.T, max(0, left - reach), min(w, left + reach), 1)
    right = first_inside(img.T, min(w - 1, right + reach), max(left, right - reach - 1), -1) + 1
    return top, bottom, left, right


def sharpness(medium: np.ndarray) -> float:
    """Mean |Laplacian| over the standard deviation: blur removes the fine detail, not the contrast."""
    if min(medium.shape) < 3:
        return 0.0
    lap = 4 * medium[1:-1, 1:-1] - medium[:-2, 1:-1] - medium[2:, 1:-1] - medium[1:-1, :-2] - medium[1:-1, 2:]
    return float(np.abs(lap).mean() / max(float(medium.std()), 1e-6))


def thumbnail(medium: np.ndarray) -> np.ndarray:
    """The medium image squashed to THUMB x THUMB and standardised (zero mean, unit deviation)."""
    pil = Image.fromarray(np.ascontiguousarray(medium, np.float32), "F")
    t = np.asarray(pil.resize((THUMB, THUMB), Image.Resampling.BOX), np.float32)
    return (t - t.mean()) / max(float(t.std()), 1e-6)


def layout_features(thumbs: np.ndarray) -> np.ndarray:
    """(n, THUMB, THUMB) standardised thumbnails -> (n, F): the pixels and the standardised gradient magnitude."""
    gy, gx = np.zeros_like(thumbs), np.zeros_like(thumbs)
    gy[:, 1:-1] = thumbs[:, 2:] - thumbs[:, :-2]
    gx[:, :, 1:-1] = thumbs[:, :, 2:] - thumbs[:, :, :-2]
    g = np.hypot(gx, gy)
    g = (g - g.mean(axis=(1, 2), keepdims=True)) / (g.std(axis=(1, 2), keepdims=True) + 1e-6)
    return np.concatenate([thumbs.reshape(len(thumbs), -1), g.reshape(len(g), -1)], axis=1)


def views(thumb: np.ndarray) -> np.ndarray:
    """A thumbnail (THUMB, THUMB) or a stack (n, THUMB, THUMB) -> its eight views (.., 8, THUMB, THUMB): turned 0-3
    quarter turns anticlockwise, then the same inverted (a standardised thumbnail inverts by its sign)."""
    t = thumb[None] if thumb.ndim == 2 else thumb
    out = np.stack([np.rot90(s * t, k, axes=(1, 2)) for s in (1, -1) for k in range(4)], axis=1)
    return out[0] if thumb.ndim == 2 else out


def orient_scores(net: tuple[np.ndarray, ...], thumbs: np.ndarray) -> np.ndarray:
    """(n, THUMB, THUMB) views -> (n,) upright scores: three 3x3 convolutions (zero padding 1), each with ReLU and
    2x2 max pooling, then a linear score; the same network benchmarks/ood_suite.py trains in torch."""
    x = thumbs[..., None].astype(np.float32)  # channels last
    for w, b in zip(net[0:6:2], net[1:6:2]):
        n, h, wd, c = x.shape
        padded = np.zeros((n, h + 2, wd + 2, c), np.float32)
        padded[:, 1:-1, 1:-1] = x
        # im2col from nine shifted slices (a third faster than sliding_window_view's copy), against torch's
        # (out, in, 3, 3) kernels laid out (3, 3, in) -> out
        cols = np.concatenate([padded[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=-1)
        y = np.maximum(cols.reshape(-1, 9 * c) @ w.transpose(2, 3, 1, 0).reshape(9 * c, -1) + b, 0)
        y = y.reshape(n, h, wd, -1)
        x = np.maximum(np.maximum(y[:, 0::2, 0::2], y[:, 1::2, 0::2]), np.maximum(y[:, 0::2, 1::2], y[:, 1::2, 1::2]))
    flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # torch flattens channels first
    return flat @ net[6].reshape(-1) + net[7].reshape(())


def _features(medium: "np.ndarray | Measures") -> np.ndarray:
    """hand_features, computed once per Measures."""
    return medium.features if isinstance(medium, Measures) else hand_features(medium)


def hand_features(medium: "np.ndarray | Measures") -> np.ndarray:
    """What the hand classifier reads: the layout, gradient orientations per cell (finger edges), the grey-level
    histogram between the 1st and 99th percentiles, and the sharpness."""
    m = medium if isinstance(medium, Measures) else Measures(medium)
    lo, hi = m.percentiles
    unit = np.clip((m.medium - lo) / max(float(hi - lo), 1e-6), 0, 1)
    hist = np.bincount(np.minimum((unit * HIST_BINS).astype(int), HIST_BINS - 1).ravel(), minlength=HIST_BINS)
    out = np.concatenate([m.layout, 4 * _hog(m.medium), 4 * np.sqrt(hist / unit.size), [np.log(m.sharpness + 1e-3)]])
    return np.nan_to_num(out).astype(np.float32)


def _hog(medium: np.ndarray) -> np.ndarray:
    """Gradient-orientation histograms in HOG_CELLS x HOG_CELLS cells, weighted by magnitude, square-rooted."""
    gy, gx = np.zeros_like(medium), np.zeros_like(medium)
    gy[1:-1], gx[:, 1:-1] = medium[2:] - medium[:-2], medium[:, 2:] - medium[:, :-2]
    out = np.bincount((_hog_cells(*medium.shape) + _orientation_bins(gx, gy)).ravel(), np.hypot(gx, gy).ravel(),
                      HOG_CELLS ** 2 * HOG_BINS)
    return np.sqrt(out / (out.sum() + 1e-6))


# tan of the bin edges inside the first quadrant (22.5, 45, 67.5 degrees): _orientation_bins is for HOG_BINS = 8
_TAN_EDGES = tuple(np.float32(np.tan(np.pi / 8 * k)) for k in (1, 2, 3))


def _orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The gradient's direction modulo 180 degrees, in HOG_BINS bins from 0 degrees: floor(angle / 22.5), from
    comparisons of |gy| with |gx| times the bin edges' tangents instead of arctan2 (a third of the time). In the
    first quadrant (gx * gy >= 0) an angle on an edge goes up; mirrored (gx * gy < 0, 180 minus the first-quadrant
    angle), down. Differs from floor(arctan2) only where |gx| and |gy| differ by a rounding error (0.05% of the
    pixels of 300 radiographs: arctan2 rounds those to the edge)."""
    ax, ay = np.abs(gx), np.abs(gy)
    edges = [t * ax for t in _TAN_EDGES]
    up = sum((ay >= e).astype(np.intp) for e in edges) + (ax == 0)  # gx == 0: 90 degrees, bin 4
    down = (HOG_BINS - 1) - sum((ay > e).astype(np.intp) for e in edges)
    return np.where(gx * gy < 0, down, up)


@lru_cache(maxsize=64)
def _hog_cells(h: int, w: int) -> np.ndarray:
    """Each pixel's cell index times HOG_BINS (thumbnails come in few shapes)."""
    cells = ((np.arange(h) * HOG_CELLS // h)[:, None] * HOG_CELLS + (np.arange(w) * HOG_CELLS // w)[None, :]) * HOG_BINS
    cells.flags.writeable = False  # shared between calls and threads
    return cells


def cropped_medium(img: np.ndarray, upright: bool = False) -> np.ndarray:
    """The medium thumbnail check() judges the layout on (frame cropped, hand straightened), for fitting.
    upright: the image is known to be upright (a training image): a tilted hand is straightened to the vertical,
    not to the nearest side (a hand at 50 degrees would be laid on its side), so that it is upright to learn from."""
    medium, _ = _medium(img)
    box = frame_box(medium)
    m = Measures(medium if box is None else medium[box[0]:box[1], box[2]:box[3]])
    straight = straighten(m.medium, m)[1]
    if upright and straight is not m:
        return _rotate(m.medium, -m.axis[0], _frame_value(m.medium))
    return straight.medium
