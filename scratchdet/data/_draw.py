"""Private drawing code of SynthFaces: faces, distractors, backgrounds, camera effects.

Everything draws in place on an RGB ``uint8`` image with OpenCV primitives at
the final resolution (sub-pixel coordinates through ``shift``, antialiased
edges) and vectorised numpy, and takes its randomness from the
``numpy.random.Generator`` passed in, so a scene is a pure function of its seed.
Coordinates are continuous pixels: pixel ``i`` spans ``[i, i + 1)``.

A face lives in its own frame: ``u`` across (units of the half-width ``a``),
``v`` down (units of the half-height ``b``), rotated by ``angle`` degrees
clockwise on screen (OpenCV's ellipse convention). The face region (the
labelled box) is the oval ``u**2 + v**2 <= 1``: hairline to chin, cheek to
cheek, ears outside.

While a scene is drawn, an ``owner`` map (``uint8 (H, W)``) records which face
each pixel shows (0: none); whatever covers a face writes 0 there, so the
caller can count how much of each face is left visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

SHIFT = 4  # fractional bits of the fixed-point coordinates passed to OpenCV
_ONE = 1 << SHIFT
_HALF = (_ONE - 1) / 2  # continuous x -> fixed point: floor(x * _ONE - _HALF) = round((x - 0.5) * _ONE)
AA, SOLID = cv2.LINE_AA, cv2.LINE_8  # antialiased on the image, hard edges on the owner map
DETAIL_PX = 7.0  # faces with a smaller half-width get a simpler (and cheaper) drawing

SKIN = [[255, 224, 196], [241, 194, 156], [224, 172, 130], [198, 134, 96],
        [160, 104, 70], [120, 76, 50], [84, 54, 36]]  # light to dark, RGB
HAIR = [[18, 15, 14], [52, 36, 26], [96, 62, 36], [150, 104, 56], [214, 184, 120],
        [140, 56, 30], [196, 196, 192], [110, 110, 116], [70, 40, 96]]
IRIS = [(70, 44, 24), (40, 28, 20), (60, 110, 160), (70, 120, 70)]
HAIR_STYLES = ("bald", "short", "bangs", "side part", "long", "long with bangs")
_HAIRLINE_DEPTH = (-0.62, -0.66, -0.3, -0.55, -0.64, -0.32)  # local v of the hairline, by style


def colour(c, scale: float = 1.0) -> tuple[int, int, int]:
    """An RGB tuple of ints, ``c * scale`` clipped to [0, 255] (``c`` non-negative)."""
    r, g, b = c
    if scale <= 1.0 and r <= 255 and g <= 255 and b <= 255:  # the common case, no clipping
        return int(r * scale), int(g * scale), int(b * scale)
    return min(255, int(r * scale)), min(255, int(g * scale)), min(255, int(b * scale))


def skin_tone(t: float, jitter) -> tuple[float, float, float]:
    """A skin colour, ``t`` in [0, 1) from light to dark, ``jitter`` three uniforms."""
    x = t * (len(SKIN) - 1)
    i = min(int(x), len(SKIN) - 2)
    w, lo, hi = x - i, SKIN[i], SKIN[i + 1]
    return tuple(min(255.0, lo[c] + w * (hi[c] - lo[c]) + 24 * (jitter[c] - 0.5)) for c in range(3))


def muted(u) -> tuple[int, int, int]:
    """A clothing-like colour from three uniforms: half saturated, mid bright."""
    r, g, b = 30 + 190 * u[0], 30 + 190 * u[1], 30 + 190 * u[2]
    grey = 0.15 * (r + g + b)
    return int(0.55 * r + grey), int(0.55 * g + grey), int(0.55 * b + grey)


def _fix(x: float, y: float) -> tuple[int, int]:
    """Continuous image point -> OpenCV fixed point (OpenCV puts pixel centres at integers)."""
    return math.floor(x * _ONE - _HALF), math.floor(y * _ONE - _HALF)


def _axes(half_w: float, half_h: float) -> tuple[int, int]:
    """Ellipse half-axes in pixels -> OpenCV fixed point."""
    return int(half_w * _ONE + 0.5), int(half_h * _ONE + 0.5)


def _thick(px: float) -> int:
    return max(1, int(px + 0.5))


def _arc(t0: float, t1: float, n: int, r: float = 1.0) -> np.ndarray:
    """``(n, 2)`` points on a circle of radius ``r``, angles ``t0 * pi`` to ``t1 * pi``."""
    t = np.linspace(t0 * math.pi, t1 * math.pi, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)  # (n, 2)


@dataclass
class Face:
    """One face (or face-like thing) to draw: geometry in pixels, looks as small choices."""

    cx: float
    cy: float
    a: float  # half-width of the face oval, px
    b: float  # half-height, px
    angle: float  # in-plane rotation, degrees clockwise
    yaw: float  # fake head turn in [-1, 1]: shifts and squeezes the features
    skin: tuple  # RGB floats
    hair: tuple  # RGB floats
    style: int  # index into HAIR_STYLES
    look: list  # 24 floats in [0, 1) for the remaining small choices

    def __post_init__(self) -> None:
        t = math.radians(self.angle)
        self.cos, self.sin = math.cos(t), math.sin(t)
        self._squeeze, self._slide = 1 - 0.25 * abs(self.yaw), 0.28 * self.yaw

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned xyxy pixel box of the rotated face oval (exact)."""
        hw = math.hypot(self.a * self.cos, self.b * self.sin)
        hh = math.hypot(self.a * self.sin, self.b * self.cos)
        return self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh

    def pt(self, u: float, v: float) -> tuple[int, int]:
        """Local (u, v) -> fixed-point image point."""
        du, dv = u * self.a, v * self.b
        return _fix(self.cx + du * self.cos - dv * self.sin, self.cy + du * self.sin + dv * self.cos)

    def poly(self, uv: np.ndarray) -> np.ndarray:
        """Local points ``(K, 2)`` -> ``int32 (K, 2)`` fixed-point polygon."""
        a, b, c, s = self.a * _ONE, self.b * _ONE, self.cos, self.sin
        rot = np.array([[a * c, a * s], [-b * s, b * c]])  # [x, y] = [u, v] @ rot + offset
        offset = np.array([self.cx - 0.5, self.cy - 0.5]) * _ONE
        return np.rint(uv @ rot + offset).astype(np.int32)  # (K, 2)

    def ell(self, img, u, v, au, av, col, thick=-1, rot=0.0, arc=(0, 360), line=AA) -> None:
        """Ellipse centred at local (u, v) with local half-axes (au, av); filled by default."""
        du, dv = u * self.a, v * self.b  # the hot path: pt() and _axes() inlined
        centre = (math.floor((self.cx + du * self.cos - dv * self.sin) * _ONE - _HALF),
                  math.floor((self.cy + du * self.sin + dv * self.cos) * _ONE - _HALF))
        axes = int(au * self.a * _ONE + 0.5), int(av * self.b * _ONE + 0.5)
        cv2.ellipse(img, centre, axes, self.angle + rot, arc[0], arc[1], col, thick, line, SHIFT)

    def fu(self, u: float) -> float:
        """Feature u after the fake head turn (features slide towards the turn)."""
        return u * self._squeeze + self._slide


# ---------------------------------------------------------------- faces

_NECK = np.array([[-0.45, 0.5], [0.45, 0.5], [0.5, 1.35], [-0.5, 1.35]])
_BEARD_U = np.linspace(0.8, -0.8, 9)
_BEARD = np.concatenate([_arc(0.92, 0.08, 15, r=1.01),  # chin, left to right, then under the mouth
                         np.stack([_BEARD_U, 0.36 + 0.12 * np.abs(_BEARD_U) ** 1.5], 1)])


def _hair_polygon(style: int, phase: float, flip: bool) -> np.ndarray:
    """Local ``(28, 2)`` outline of the hair over the forehead: skull top, then the hairline."""
    u = np.linspace(1.05, -1.05, 13)  # right to left
    v = _HAIRLINE_DEPTH[style] + 0.28 * u**2 + 0.06 * np.sin(u * 9 + phase)
    if style == 3:  # side part: low on one side
        v += 0.25 * (-u if flip else u)
    return np.concatenate([_arc(1.03, 1.97, 15, r=1.06), np.stack([u, v], 1)])


# precomputed for speed: [style][wave phase][side of the part]
_HAIR_UV = [[[_hair_polygon(s, k / 2, flip) for flip in (False, True)] for k in range(12)] for s in range(6)]


def draw_face(img: np.ndarray, owner: np.ndarray, fid: int, f: Face, body: bool) -> int:
    """Draw one person (body, hair, face, features); mark the face oval ``fid`` in ``owner``.

    Returns the oval's pixel count inside the image before anything later covers it.
    """
    count = _draw_head(img, owner, fid, f, body)
    if f.style > 0 and f.a >= DETAIL_PX:
        uv = _HAIR_UV[f.style][int(f.look[4] * 12)][f.look[5] < 0.5]
        cv2.fillPoly(img, [f.poly(uv)], colour(f.hair), AA, SHIFT)
    if f.look[6] < 0.07:  # hat
        hat = muted(f.look[7:10])
        f.ell(img, 0, -0.55, 1.05, 0.62, hat, arc=(180, 360))
        f.ell(img, 0, -0.58, 1.45, 0.1, hat)
    _draw_features(img, f)
    return count


def _draw_head(img: np.ndarray, owner: np.ndarray, fid: int, f: Face, body: bool) -> int:
    long_hair, small = f.style >= 4, f.a < DETAIL_PX
    if body:  # everything but the oval also hides faces drawn earlier: 0 in owner
        torso = _fix(f.cx, f.cy + 2.5 * f.b), _axes(2.1 * f.a, 1.4 * f.b)
        cv2.ellipse(img, *torso, 0, 0, 360, muted(f.look[0:3]), -1, AA, SHIFT)
        cv2.ellipse(owner, *torso, 0, 0, 360, 0, -1, SOLID, SHIFT)
        if not small:
            cv2.fillPoly(img, [f.poly(_NECK)], colour(f.skin, 0.8), AA, SHIFT)
    if f.style > 0:
        back = (0, 0.3, 1.22, 1.2) if long_hair else (0, -0.2, 1.1, 1.0)
        f.ell(img, *back, colour(f.hair))
        f.ell(owner, *back, 0, line=SOLID)
    if small:  # hair-coloured oval, skin below the hairline: no polygon needed
        top = _HAIRLINE_DEPTH[f.style] + 0.12 if f.style else -1.0
        f.ell(img, 0, 0, 1, 1, colour(f.hair if f.style else f.skin))
        f.ell(img, 0, (1 + top) / 2, 0.96, (1 - top) / 2, colour(f.skin))
    else:
        if not long_hair:
            for side in (-1, 1):
                f.ell(img, side * 0.97, 0.0, 0.17, 0.27, colour(f.skin, 0.88))
        f.ell(img, 0, 0, 1, 1, colour(f.skin, 0.86))  # shadow side, then the lit side
        light = f.look[3] * 2 * math.pi
        f.ell(img, 0.06 * math.cos(light), 0.05 * math.sin(light), 0.93, 0.94, colour(f.skin))
    f.ell(owner, 0, 0, 1, 1, fid, line=SOLID)
    x1, y1, x2, y2 = (int(c) for c in f.box)
    roi = owner[max(y1, 0): max(y2 + 2, 0), max(x1, 0): max(x2 + 2, 0)]
    return int(np.count_nonzero(roi == fid))


def _draw_features(img: np.ndarray, f: Face) -> None:
    """Eyebrows, eyes, nose, beard, mouth and glasses, with less detail on small faces."""
    lk, ev, eu = f.look, -0.28 + 0.18 * f.look[10], 0.36 + 0.1 * f.look[11]
    if f.a >= 5:
        for side in (-1, 1):
            p, q = f.pt(f.fu(side * (eu - 0.2)), ev - 0.2), f.pt(f.fu(side * (eu + 0.2)), ev - 0.24)
            cv2.line(img, p, q, colour(f.hair, 0.7), _thick(0.07 * f.a), AA, SHIFT)
    for side in (-1, 1):
        u = f.fu(side * eu)
        if lk[12] < 0.15:  # closed
            f.ell(img, u, ev, 0.17, 0.06, colour(f.skin, 0.45), _thick(0.04 * f.a), arc=(0, 180))
        elif f.a >= DETAIL_PX:
            f.ell(img, u, ev, 0.18, 0.085, (238, 236, 230))
            f.ell(img, u + 0.03 * f.yaw, ev, 0.085, 0.08, IRIS[int(lk[13] * 4)])
            f.ell(img, u + 0.03 * f.yaw, ev, 0.04, 0.035, (10, 10, 10))
        else:
            f.ell(img, u, ev, 0.14, 0.09, (25, 20, 20))
    if f.a >= 5:
        nose = np.array([(f.fu(0.0) + 0.06 * f.yaw, ev + 0.1), (f.fu(-0.06), 0.28), (f.fu(0.08), 0.3)])
        cv2.polylines(img, [f.poly(nose)], False, colour(f.skin, 0.72), _thick(0.05 * f.a), AA, SHIFT)
    if lk[14] < 0.16 and f.a >= 4:
        cv2.fillPoly(img, [f.poly(_BEARD)], colour(f.hair, 0.9), AA, SHIFT)
    _draw_mouth(img, f)
    if lk[15] < 0.22 and f.a >= 5:
        _draw_glasses(img, f, ev, eu, sun=lk[16] < 0.3)


def _draw_mouth(img: np.ndarray, f: Face) -> None:
    kind, mv, mw, mu = int(f.look[17] * 3), 0.5 + 0.1 * f.look[18], 0.22 + 0.16 * f.look[19], f.fu(0.0)
    r, g, b = f.skin
    lips = colour(f.skin, 0.5) if f.a < DETAIL_PX else colour((0.8 * r, 0.45 * g, 0.45 * b))
    if kind == 0:  # smile
        f.ell(img, mu, mv - 0.08, mw, 0.12, lips, _thick(0.06 * f.a), arc=(15, 165))
    elif kind == 1:  # open mouth
        f.ell(img, mu, mv, mw * 0.8, 0.08 + 0.06 * f.look[20], (70, 20, 24))
        f.ell(img, mu, mv, mw * 0.8, 0.08 + 0.06 * f.look[20], lips, _thick(0.04 * f.a))
    else:  # closed lips
        f.ell(img, mu, mv, mw, 0.045, lips)


def _draw_glasses(img: np.ndarray, f: Face, ev: float, eu: float, sun: bool) -> None:
    frame = colour((f.look[21] * 120, f.look[22] * 120, f.look[23] * 120))
    for side in (-1, 1):
        u = f.fu(side * eu)
        if sun:
            f.ell(img, u, ev, 0.25, 0.15, (16, 16, 20))
        f.ell(img, u, ev + 0.01, 0.26, 0.16, frame, _thick(0.05 * f.a))
    bridge = f.pt(f.fu(-eu + 0.26), ev), f.pt(f.fu(eu - 0.26), ev)
    cv2.line(img, *bridge, frame, _thick(0.04 * f.a), AA, SHIFT)


# ---------------------------------------------------------------- distractors and occluders
# Face-like things that are not faces: none has the whole face layout
# (hair, two eyes over a nose over a mouth, inside a skin oval).


def _scrambled(img, rng, f: Face) -> None:
    """Skin oval (half the time with hair) with features in a wrong arrangement, or too few."""
    if rng.random() < 0.5:
        f.ell(img, 0, -0.2, 1.1, 1.0, colour(f.hair))
    f.ell(img, 0, 0, 1, 1, colour(f.skin))
    kind = int(rng.random() * 4)
    spots = {0: [(0, -0.4), (0, 0.1)], 1: [(0.35, -0.2)], 2: [(-0.4, 0.45), (0.4, 0.45)],
             3: [tuple(rng.uniform(-0.6, 0.6, 2)) for _ in range(3)]}[kind]
    for u, v in spots:
        f.ell(img, u, v, 0.12, 0.09, (30, 24, 22))
    if kind == 2:  # mouth above the eyes
        f.ell(img, 0, -0.45, 0.3, 0.12, colour(f.skin, 0.5), _thick(0.06 * f.a), arc=(15, 165))


def _smiley(img, rng, f: Face) -> None:
    """Flat yellow-ish emoji: dots and an arc, no nose, no hair, no skin tone."""
    ink = (40, 30, 10)
    f.ell(img, 0, 0, 1, 1, colour((250, 200 + rng.uniform(-40, 30), 40 + rng.uniform(-30, 60))))
    f.ell(img, 0, 0, 1, 1, ink, _thick(0.05 * f.a))
    for side in (-1, 1):
        f.ell(img, side * 0.35, -0.3, 0.1, 0.16, ink)
    f.ell(img, 0, 0.1, 0.55, 0.45, ink, _thick(0.08 * f.a), arc=(20, 160))


def _clock(img, rng, f: Face) -> None:
    f.ell(img, 0, 0, 1, 1, colour(rng.uniform(200, 255, 3)))
    f.ell(img, 0, 0, 1, 1, colour(rng.random(3) * 90), _thick(0.09 * f.a))
    ink, t = (20, 20, 20), np.arange(12) * math.pi / 6
    for x, y in zip(np.cos(t).tolist(), np.sin(t).tolist()):
        cv2.line(img, f.pt(0.8 * x, 0.8 * y), f.pt(0.68 * x, 0.68 * y), ink, _thick(0.04 * f.a), AA, SHIFT)
    for length, hand in zip((0.45, 0.7), rng.uniform(0, 2 * math.pi, 2).tolist()):
        tip = f.pt(length * math.cos(hand), length * math.sin(hand))
        cv2.line(img, f.pt(0, 0), tip, ink, _thick(0.05 * f.a), AA, SHIFT)


def _ball(img, rng, f: Face) -> None:
    base = [(235, 120, 30), (240, 240, 235), (200, 40, 40), (230, 220, 60)][int(rng.random() * 4)]
    f.ell(img, 0, 0, 1, 1, base)
    ink = (20, 20, 20) if sum(base) > 450 else (250, 250, 250)
    if rng.random() < 0.5:  # seams
        for rot in (0, 90):
            f.ell(img, 0, 0, 1, 0.25, ink, _thick(0.04 * f.a), rot=rot)
    else:  # panels
        for u, v in [(0, 0)] + [(0.65 * math.cos(t), 0.65 * math.sin(t)) for t in np.arange(5) * 1.2566]:
            f.ell(img, u, v, 0.22, 0.22, ink)
    f.ell(img, -0.35, -0.4, 0.2, 0.14, colour(base, 1.2))


def _button(img, rng, f: Face) -> None:
    """A disc (button, socket, plate) with two or four holes: pareidolia bait."""
    f.ell(img, 0, 0, 1, 1, colour(rng.random(3) * 255))
    f.ell(img, 0, 0, 0.8, 0.8, colour(rng.random(3) * 255), _thick(0.06 * f.a))
    two = [(-0.3, 0), (0.3, 0)]
    holes = two if rng.random() < 0.5 else [(-0.3, -0.3), (0.3, -0.3), (-0.3, 0.3), (0.3, 0.3)]
    for u, v in holes:
        f.ell(img, u, v, 0.12, 0.12 if rng.random() < 0.7 else 0.3, (25, 25, 25))


def _back_of_head(img, rng, f: Face) -> None:
    """A head seen from behind: hair all over, ears and neck, no face."""
    for side in (-1, 1):
        f.ell(img, side * 0.97, 0.05, 0.17, 0.27, colour(f.skin, 0.88))
    f.ell(img, 0, -0.1, 1.08, 1.1, colour(f.hair))
    f.ell(img, 0, 0.95, 0.5, 0.2, colour(f.skin, 0.85))


def _blob(img, rng, f: Face) -> None:
    """A plain oval in a skin tone or any colour, sometimes with a highlight."""
    f.ell(img, 0, 0, 1, 1, colour(f.skin))
    if rng.random() < 0.6:
        f.ell(img, -0.3, -0.3, 0.3, 0.2, colour(f.skin, 1.15))


# kind -> (draw, skin-toned, round)
DISTRACTORS = {"scrambled": (_scrambled, True, False), "smiley": (_smiley, False, True),
               "clock": (_clock, False, True), "ball": (_ball, False, True), "button": (_button, False, True),
               "back_of_head": (_back_of_head, True, False), "skin_blob": (_blob, True, False),
               "colour_blob": (_blob, False, False)}


def draw_distractor(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float,
                    owner: np.ndarray | None = None) -> str:
    """Draw a random face-like non-face of radius about ``r`` px at (cx, cy); return its kind.

    With ``owner``, its oval footprint is written there as 0 (it hides faces).
    """
    kind = list(DISTRACTORS)[int(rng.random() * len(DISTRACTORS))]
    draw, skin, round_ = DISTRACTORS[kind]
    u = rng.random(32).tolist()
    tone = skin_tone(u[0], u[1:4]) if skin else (255 * u[1], 255 * u[2], 255 * u[3])
    f = Face(cx, cy, r, r * (1 if round_ else 0.9 + 0.45 * u[4]), 80 * u[5] - 40, 0.0, tone,
             tuple(HAIR[int(u[6] * len(HAIR))]), 1 + int(u[7] * 5), u[8:])
    draw(img, rng, f)
    if owner is not None:
        f.ell(owner, 0, 0, 1, 1, 0, line=SOLID)
    return kind


def _occluder_shapes(rng: np.random.Generator, cx: float, cy: float, r: float) -> list:
    """Ellipses ``(centre, axes, angle, colour)`` and polygons ``(points, colour)``, fixed point."""
    kind, angle = int(rng.random() * 4), float(rng.uniform(0, 180))
    if kind == 0:  # hand: palm and four fingers in a skin tone
        f = Face(cx, cy, r * 0.6, r * 0.75, angle, 0, (0, 0, 0), (0, 0, 0), 0, [])
        parts = [(0, 0.3, 1, 0.8)] + [(u, -0.6, 0.18, 0.6) for u in (-0.6, -0.2, 0.2, 0.6)]
        skin = colour(skin_tone(rng.random(), rng.random(3)))
        return [(f.pt(u, v), _axes(au * f.a, av * f.b), angle, skin) for u, v, au, av in parts]
    if kind in (1, 2):  # board or pole: a rotated rectangle
        size = (2 * r, 1.4 * r) if kind == 1 else (0.4 * r, 5 * r)
        pts = np.rint((cv2.boxPoints(((cx, cy), size, angle)) - 0.5) * _ONE).astype(np.int32)
        return [(pts, muted(rng.random(3)))]
    leaves = ((0, 0), (0.5, 0.3), (-0.4, 0.4), (0.1, -0.5))  # a few overlapping green ellipses
    return [(_fix(cx + dx * r, cy + dy * r), _axes(0.7 * r, 0.45 * r), angle + 40 * dx,
             colour((40 + 60 * rng.random(), 110 + 80 * rng.random(), 40))) for dx, dy in leaves]


def draw_occluder(img: np.ndarray, owner: np.ndarray, rng: np.random.Generator,
                  cx: float, cy: float, r: float) -> None:
    """Draw a hand, board, pole or leaves of size about ``r`` px over (cx, cy); 0 in ``owner``."""
    for shape in _occluder_shapes(rng, cx, cy, r):
        if len(shape) == 2:
            cv2.fillPoly(img, [shape[0]], shape[1], AA, SHIFT)
            cv2.fillPoly(owner, [shape[0]], 0, SOLID, SHIFT)
        else:
            centre, axes, angle, col = shape
            cv2.ellipse(img, centre, axes, angle, 0, 360, col, -1, AA, SHIFT)
            cv2.ellipse(owner, centre, axes, angle, 0, 360, 0, -1, SOLID, SHIFT)


# ---------------------------------------------------------------- backgrounds


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth colour noise: a ``cells``-square random image, bilinearly upsampled."""
    low = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR)


def _stripes(img: np.ndarray, rng: np.random.Generator) -> None:
    """Parallel bands of one colour across the image, in one ``fillPoly`` call."""
    size, period, t = img.shape[0], rng.uniform(0.04, 0.3) * img.shape[0], rng.uniform(0, math.pi)
    along, across = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    starts = np.arange(-1.5 * size, 1.5 * size, period)[:, None, None]  # (K, 1, 1)
    corner_u = np.array([-2, 2, 2, -2])[None, :, None] * size  # (1, 4, 1)
    corner_v = np.array([0, 0, 1, 1])[None, :, None] * period * rng.uniform(0.2, 0.7)
    pts = size / 2 + (starts + corner_v) * across + corner_u * along  # (K, 4, 2)
    cv2.fillPoly(img, list(np.rint(pts * _ONE).astype(np.int32)), colour(rng.random(3) * 255), AA, SHIFT)


def _tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random-coloured tiles or a two-colour checkerboard, ``uint8 (size, size, 3)``."""
    n = int(rng.integers(2, 10))
    if rng.random() < 0.5:
        tiles = rng.random((n, n, 3)) * 255
    else:
        tiles = (np.indices((n, n)).sum(0) % 2)[..., None] * (rng.random(3) * 255)  # (n, n, 3)
    return cv2.resize(tiles.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, cluttered ``uint8 (size, size, 3)`` RGB background, never flat."""
    img = _smooth(rng, size, 2)  # a gradient between four corner colours
    kind = int(rng.random() * 4)
    if kind == 1:
        _stripes(img, rng)
    elif kind == 2:
        img = cv2.addWeighted(img, 0.3, _tiles(rng, size), 0.7, 0)
    mix = rng.uniform(0.15, 0.7 if kind == 3 else 0.4)  # kind 3: mostly colour noise
    img = cv2.addWeighted(img, 1 - mix, _smooth(rng, size, int(rng.integers(3, 32))), mix, 0)
    for _ in range(int(rng.integers(2, 14))):
        _clutter(img, rng, size)
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """One random rectangle, line, ring, polygon or piece of text."""
    kind, col = int(rng.random() * 5), colour(rng.random(3) * 255)
    p, q = rng.uniform(-0.1, 1.1, 2) * size, rng.uniform(-0.1, 1.1, 2) * size
    thick = -1 if rng.random() < 0.5 else _thick(1 + rng.random() * size / 40)
    if kind == 0:
        cv2.rectangle(img, _fix(*p), _fix(*q), col, thick, AA, SHIFT)
    elif kind == 1:
        cv2.line(img, _fix(*p), _fix(*q), col, _thick(1 + rng.random() * size / 30), AA, SHIFT)
    elif kind == 2:
        cv2.circle(img, _fix(*p), int(rng.uniform(0.02, 0.2) * size * _ONE), col, max(thick, 1), AA, SHIFT)
    elif kind == 3:
        pts = p + rng.normal(0, size / 8, (int(rng.integers(3, 7)), 2))  # (K, 2)
        cv2.fillPoly(img, [np.rint((pts - 0.5) * _ONE).astype(np.int32)], col, AA, SHIFT)
    else:
        text = "".join(rng.choice(list("ABCDEFGHKMNPRSTUVWXZ0123456789"), int(rng.integers(2, 8))))
        cv2.putText(img, text, (int(p[0]), int(p[1])), cv2.FONT_HERSHEY_SIMPLEX,
                    rng.uniform(0.3, 1.5) * size / 256, col, _thick(size / 200), AA)


# ---------------------------------------------------------------- camera effects

_GAUSS_Q = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])  # normal quantiles


def _motion_blur(img: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Average of ``length`` shifted copies along ``angle`` (exact integer maths)."""
    dx, dy = math.cos(angle), math.sin(angle)
    acc = np.zeros(img.shape, np.uint16)
    for k in np.arange(length) - (length - 1) / 2:
        acc += np.roll(img, (int(round(k * dy)), int(round(k * dx))), axis=(0, 1))
    return (acc // length).astype(np.uint8)


def _noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Add grey Gaussian noise: uniform random bytes mapped through the normal quantiles."""
    lut = np.clip(128 + sigma * _GAUSS_Q, 0, 255).astype(np.uint8)
    noise = cv2.LUT(rng.integers(0, 256, img.shape[:2], dtype=np.uint8), lut)  # (H, W)
    return cv2.addWeighted(img, 1.0, cv2.cvtColor(noise, cv2.COLOR_GRAY2RGB), 1.0, -128.0)


def apply_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, lighting (gamma, gain, colour cast, fall-off), noise and JPEG, each sometimes."""
    u, size = rng.random(4), img.shape[0]
    if u[0] < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.4) * size / 256)
    elif u[0] < 0.37:
        img = _motion_blur(img, int(rng.integers(3, 8) * size / 256) + 1, rng.uniform(0, math.pi))
    gamma, bias = rng.uniform(0.7, 1.5), rng.uniform(-0.1, 0.1)
    gain = rng.uniform(0.7, 1.25) * rng.uniform(0.88, 1.12, 3)  # brightness and colour cast
    lut = np.clip(255 * ((np.arange(256) / 255.0)[:, None] ** gamma * gain + bias), 0, 255)
    img = cv2.LUT(img, lut.astype(np.uint8)[:, None, :])  # (256, 1, 3): one curve per channel
    if u[1] < 0.6:  # light falling off towards some corner
        corners = np.repeat(255 - rng.random((2, 2, 1)) * rng.uniform(60, 180), 3, axis=2)
        field = cv2.resize(corners.astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
        img = cv2.multiply(img, field, scale=1 / 255)
    if u[2] < 0.5:
        img = _noise(rng, img, rng.uniform(2, 12))
    if u[3] < 0.2:
        quality = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 80))]
        buf = cv2.imencode(".jpg", img[..., ::-1], quality)[1]
        img = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return img
