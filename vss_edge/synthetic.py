"""Synthetic labelled video with exact per-pixel labels and exact optical flow.

    from vss_edge.synthetic import SyntheticConfig, SyntheticVideo
    video = SyntheticVideo(SyntheticConfig(height=256, width=512), seed=0)
    for f in video.frames(30):
        f.image, f.labels, f.flow, f.valid   # BGR uint8, uint8, float32 (dx, dy), bool

A clip is a real background image (by default a frame of the shipped sample clip,
``vss_edge.runtime.sources.sample_clip_path()``), seen through a moving camera (smooth pan,
slight zoom and rotation), with textured objects of several classes in front of
it. Each object has a shape (ellipse, rectangle, convex polygon or ring), a
procedural texture that depends on its class (colour and pattern, with
per-object variation, so the class can be learnt from appearance), a fixed depth
order, and its own smooth motion (translation, rotation, scale) in scene
coordinates; the camera acts on top. Objects cross each other, and leave and
enter the view, so there is occlusion and dis-occlusion.

Everything is rendered by inverse mapping from analytic transforms, so labels
and flow are exact rather than estimated:

- Pixel (x, y) (column, row; pixel centres at integer coordinates, as in
  OpenCV) belongs to the front-most object whose shape contains the pixel centre
  mapped into that object's local coordinates; otherwise to the background
  (class 0).
- ``flow`` is BACKWARD flow: pixel (x, y) of frame t shows the scene point that
  was at (x + dx, y + dy) in frame t-1. Warping frame t-1 with it
  (``cv2.remap(prev, x + dx, y + dy)``) predicts frame t.
- ``valid`` is True where that point was visible in frame t-1: inside the frame
  and owned there by the same object (or by the background), tested
  analytically at the continuous point. False marks dis-occlusion and content
  that entered the view.

A scene is fixed by (config, seed) at construction; ``frame(t)`` is a pure
function of t (random access, bit-identical however it is reached). Motion is
defined for every t >= 0: camera motion is a bounded sum of slow sinusoids, and
objects drift through a region around the view that wraps out of sight. Only
numpy and OpenCV are used (no torch).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SyntheticConfig", "SyntheticFrame", "SyntheticVideo", "class_names", "MAX_CLASSES"]

# Class appearance: class c >= 1 has pattern _PATTERNS[k % 4] and colour
# _COLOURS[(k + k // 4) % 6], k = c - 1 -- 24 distinct combinations, fixed for
# every seed so a network can learn class from appearance.
_PATTERNS = ("stripes", "checker", "dots", "blobs")
_COLOURS = (  # name, primary colour BGR
    ("red", (40, 40, 215)),
    ("green", (50, 185, 40)),
    ("blue", (215, 95, 30)),
    ("yellow", (30, 215, 235)),
    ("magenta", (205, 45, 205)),
    ("cyan", (220, 205, 35)),
)
MAX_CLASSES = 1 + len(_PATTERNS) * len(_COLOURS)  # background + 24 object classes
_SHAPES = ("ellipse", "rectangle", "polygon", "ring")


def _class_look(c: int) -> tuple[str, str, tuple[int, int, int]]:
    """(pattern, colour name, BGR primary colour) of object class c >= 1."""
    k = c - 1
    name, bgr = _COLOURS[(k + k // len(_PATTERNS)) % len(_COLOURS)]
    return _PATTERNS[k % len(_PATTERNS)], name, bgr


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic clip looks like. Lengths are fractions of ``ref = min(height, width)``
    so the same config looks alike at any resolution.

    height, width: output size in pixels (>= 8 each, any parity).
    num_classes: classes including background (class 0 = static scene, 1.. = object
        classes), 2..MAX_CLASSES (25).
    objects: number of moving objects in the scene (>= 0); they drift through a region about
        twice the view in each direction, so with 6 about 3-4 are at least partly in view.
    object_size: (min, max) object diameter / ref, 0 < min <= max <= 1.
    object_speed: max object translation per frame / ref (>= 0, <= 0.2).
    object_rotation: max object rotation per frame in degrees (0..30).
    object_scale_change: max relative object scale change per frame (0..0.2).
    camera_speed: max camera pan per frame / ref (>= 0, <= 0.2).
    camera_rotation: max camera roll per frame in degrees (0..5).
    camera_zoom: max relative camera zoom change per frame (0..0.05).
    """

    height: int = 256
    width: int = 512
    num_classes: int = 5
    objects: int = 6
    object_size: tuple[float, float] = (0.2, 0.6)
    object_speed: float = 0.02
    object_rotation: float = 3.0
    object_scale_change: float = 0.02
    camera_speed: float = 0.01
    camera_rotation: float = 0.3
    camera_zoom: float = 0.005

    def __post_init__(self):
        for name, low in (("height", 8), ("width", 8), ("num_classes", 2), ("objects", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.num_classes > MAX_CLASSES:
            raise ValueError(f"num_classes must be <= {MAX_CLASSES} (distinct object looks), got {self.num_classes}")
        try:
            lo, hi = (float(v) for v in self.object_size)
        except (TypeError, ValueError):
            raise ValueError(f"object_size must be a (min, max) pair of numbers, got {self.object_size!r}") from None
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"object_size must satisfy 0 < min <= max <= 1, got {self.object_size!r}")
        limits = dict(object_speed=0.2, object_rotation=30.0, object_scale_change=0.2,
                      camera_speed=0.2, camera_rotation=5.0, camera_zoom=0.05)
        for name, high in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0 <= value <= high):
                raise ValueError(f"{name} must be in [0, {high}], got {value}")


@dataclass
class SyntheticFrame:
    """One rendered frame (H, W = the config's height, width).

    image: uint8 (H, W, 3) BGR.
    labels: uint8 (H, W) class indices in [0, num_classes).
    flow: float32 (H, W, 2) backward flow (dx, dy) in pixels: pixel (x, y) of this frame
        shows what frame t-1 showed at (x + dx, y + dy). All zeros for frame 0.
    valid: bool (H, W): True where that point was visible in frame t-1 (inside the
        frame and not occluded); all False for frame 0.
    """

    image: np.ndarray
    labels: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


def class_names(cfg: SyntheticConfig) -> list[str]:
    """Names of cfg.num_classes classes: "background", then each object class's look ("red stripes", ...)."""
    names = ["background"]
    for c in range(1, cfg.num_classes):
        pattern, colour, _ = _class_look(c)
        names.append(f"{colour} {pattern}")
    return names


@functools.lru_cache(maxsize=1)
def _sample_backgrounds() -> tuple[np.ndarray, ...]:
    """Every 6th frame of the shipped sample clip (BGR uint8, read-only), decoded once per process."""
    from vss_edge.runtime.sources import open_source, sample_clip_path

    with open_source(sample_clip_path()) as source:
        frames = [f for i, f in enumerate(source) if i % 6 == 0]
    for f in frames:
        f.setflags(write=False)
    return tuple(frames)


# --- geometry -----------------------------------------------------------------------


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    """3x3 matrix of u -> scale * R(angle) u + (tx, ty)."""
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the affine part of 3x3 matrix m to coordinates (broadcasting float64 arrays)."""
    return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]


def _bbox(m: np.ndarray, radius: float) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) bounding box of the square [-radius, radius]^2 mapped by m."""
    r = np.array([-radius, radius, radius, -radius])
    xs, ys = _apply(m, r, np.roll(r, 1))
    return xs.min(), xs.max(), ys.min(), ys.max()


class _Object:
    """A textured shape with its own motion; local coordinates u are scene pixels at scale 1."""

    def __init__(self, cls: int, cfg: SyntheticConfig, wrap_half: np.ndarray, rng: np.random.Generator):
        ref = min(cfg.height, cfg.width)
        self.cls = cls
        self.radius = rng.uniform(*cfg.object_size) * ref / 2  # every shape fits in the disc of this radius
        self.shape = _SHAPES[rng.integers(len(_SHAPES))]
        r = self.radius
        if self.shape == "rectangle":
            beta = rng.uniform(math.radians(25), math.radians(65))
            self.a, self.b = r * math.cos(beta), r * math.sin(beta)
        else:
            self.a, self.b = r, r * rng.uniform(0.55, 1.0)
        self.hole = rng.uniform(0.4, 0.65)  # ring: inner/outer radius ratio
        if self.shape == "polygon":  # vertices on the ellipse, in angular order: convex, counter-clockwise
            n = int(rng.integers(5, 9))
            ang = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * math.pi / n)
            vx, vy = self.a * np.cos(ang), self.b * np.sin(ang)
            ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
            # inside <=> cross(edge, u - v) >= 0 <=> ey*ux - ex*uy <= ey*vx - ex*vy for every edge
            self.halfplanes = [(float(ey[i]), float(-ex[i]), float(ey[i] * vx[i] - ex[i] * vy[i])) for i in range(n)]
        # motion: translation (drift + wobble), rotation, scale, all smooth in t
        vmax = cfg.object_speed * ref
        heading = rng.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(heading), math.sin(heading)])
        self.velocity = direction * vmax * rng.uniform(0.2, 0.75)
        self.wobble_w = 2 * math.pi / rng.uniform(20, 80)
        self.wobble = np.array([-direction[1], direction[0]]) * vmax * rng.uniform(0, 0.25) / self.wobble_w
        self.wobble_phase = rng.uniform(0, 2 * math.pi)
        self.angle0 = rng.uniform(0, 2 * math.pi)
        self.spin = math.radians(cfg.object_rotation) * rng.uniform(-1, 1)
        self.scale_w = 2 * math.pi / rng.uniform(30, 120)
        self.scale_amp = min(math.log(1.4), cfg.object_scale_change * rng.uniform(0.3, 1) / self.scale_w)
        self.scale_phase = rng.uniform(0, 2 * math.pi)
        # positions wrap around the view centre once the object is entirely out of every possible view
        self.wrap_half = wrap_half + self.radius * math.exp(self.scale_amp)
        self.start = rng.uniform(-self.wrap_half, self.wrap_half)
        self.texture = _make_texture(cls, int(math.ceil(r)), ref, rng)
        self.texture_offset = math.ceil(r) + 2  # texture pixel of local (0, 0)

    def pose(self, t: int, view_centre: np.ndarray) -> np.ndarray:
        """3x3 matrix local -> scene at time t; view_centre = scene point at the image centre."""
        drift = self.start + self.velocity * t + self.wobble * math.sin(self.wobble_w * t + self.wobble_phase)
        d = drift - view_centre
        d = d - 2 * self.wrap_half * np.floor((d + self.wrap_half) / (2 * self.wrap_half))
        x, y = view_centre + d
        scale = math.exp(self.scale_amp * math.sin(self.scale_w * t + self.scale_phase))
        return _similarity(scale, self.angle0 + self.spin * t, x, y)

    def inside(self, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
        """Bool mask of local points inside the shape (closed)."""
        if self.shape == "rectangle":
            return (np.abs(ux) <= self.a) & (np.abs(uy) <= self.b)
        if self.shape == "polygon":
            mask = np.ones(np.broadcast_shapes(ux.shape, uy.shape), dtype=bool)
            for nx, ny, c in self.halfplanes:
                mask &= nx * ux + ny * uy <= c
            return mask
        e = (ux / self.a) ** 2 + (uy / self.b) ** 2
        if self.shape == "ring":
            return (e <= 1.0) & (e >= self.hole**2)
        return e <= 1.0


def _make_texture(cls: int, half: int, ref: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (S, S, 3) BGR texture, S = 2 * half + 5, centred on local (0, 0); its look depends on cls."""
    size = 2 * half + 5
    pattern, _, primary = _class_look(cls)
    primary = np.clip(np.array(primary, float) + rng.uniform(-25, 25, 3), 0, 255) * rng.uniform(0.85, 1.1)
    secondary = primary * rng.uniform(0.2, 0.4) + rng.uniform(0, 20)
    period = max(4.0, 0.05 * ref * (1 + 0.3 * ((cls - 1) // len(_PATTERNS) % 3))) * rng.uniform(0.8, 1.25)
    g = np.arange(size, dtype=np.float64) - (half + 2)
    gx, gy = np.meshgrid(g, g)
    angle = rng.uniform(0, math.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    px = (ca * gx + sa * gy) / period + rng.uniform(0, 1)  # pattern coordinates, in periods
    py = (-sa * gx + ca * gy) / period + rng.uniform(0, 1)
    if pattern == "stripes":
        m = 0.5 + 1.5 * np.sin(2 * math.pi * px)
    elif pattern == "checker":
        m = 0.5 + 3.0 * np.sin(2 * math.pi * px) * np.sin(2 * math.pi * py)
    elif pattern == "dots":
        fx, fy = px - np.floor(px) - 0.5, py - np.floor(py) - 0.5
        m = (0.32 - np.sqrt(fx**2 + fy**2)) * period / 1.5 + 0.5  # discs with ~1.5 px soft edge
    else:  # blobs: smooth random field
        cells = max(2, int(math.ceil(size / period)) + 1)
        noise = cv2.resize(rng.standard_normal((cells, cells)), (size, size), interpolation=cv2.INTER_CUBIC)
        m = 0.5 + 1.5 * noise / max(noise.std(), 1e-6)
    m = np.clip(m, 0, 1)[..., None]
    grain = cv2.GaussianBlur(rng.standard_normal((size, size)), (0, 0), 1.0)[..., None] * 12
    texture = secondary + m * (primary - secondary) + grain
    return np.ascontiguousarray(np.clip(np.rint(texture), 0, 255).astype(np.uint8))


# --- the video ----------------------------------------------------------------------


class SyntheticVideo:
    """A deterministic synthetic clip of unbounded length; ``frame(t)`` renders frame t >= 0.

    cfg: a SyntheticConfig. seed: int >= 0; the same (cfg, seed, backgrounds) gives
    bit-identical frames. backgrounds: optional sequence of real BGR uint8 images
    (H, W, 3) to draw the background from; default: frames of the shipped sample clip.
    """

    def __init__(self, cfg: SyntheticConfig, seed: int, backgrounds: Sequence[np.ndarray] | None = None):
        if not isinstance(cfg, SyntheticConfig):
            raise TypeError(f"cfg must be a SyntheticConfig, not {type(cfg).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if backgrounds is None:
            backgrounds = _sample_backgrounds()
        if len(backgrounds) == 0:
            raise ValueError("backgrounds is empty")
        for i, b in enumerate(backgrounds):
            if not (isinstance(b, np.ndarray) and b.dtype == np.uint8 and b.ndim == 3 and b.shape[2] == 3
                    and min(b.shape[:2]) >= 8):
                raise ValueError(f"backgrounds[{i}] must be a BGR uint8 (H, W, 3) image, H, W >= 8")
        self.cfg = cfg
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        h, w = cfg.height, cfg.width
        ref = min(h, w)
        self._centre = np.array([(w - 1) / 2, (h - 1) / 2])

        # camera: scene -> image, p = c + z R(phi) (s - c - pan); bounded sinusoids in t
        self._pan_w = 2 * math.pi / rng.uniform(60, 240, 2)
        self._pan_phase = rng.uniform(0, 2 * math.pi, 2)
        heading = rng.uniform(0, 2 * math.pi)
        pan_speed = cfg.camera_speed * ref * rng.uniform(0.5, 1.0)
        self._pan_amp = np.abs([math.cos(heading), math.sin(heading)]) * pan_speed / self._pan_w
        self._roll_w = 2 * math.pi / rng.uniform(60, 240)
        self._roll_amp = min(math.radians(5), math.radians(cfg.camera_rotation) * rng.uniform(0.5, 1) / self._roll_w)
        self._roll_phase = rng.uniform(0, 2 * math.pi)
        self._zoom_w = 2 * math.pi / rng.uniform(60, 240)
        self._zoom_amp = min(math.log(1.15), cfg.camera_zoom * rng.uniform(0.5, 1) / self._zoom_w)
        self._zoom_phase = rng.uniform(0, 2 * math.pi)

        # half extents, in scene pixels around the view centre, of everything any view can show
        hx, hy, roll, zmin = w / 2 + 1, h / 2 + 1, self._roll_amp, math.exp(-self._zoom_amp)
        view_half = np.array([hx * math.cos(roll) + hy * math.sin(roll), hx * math.sin(roll) + hy * math.cos(roll)]) / zmin

        # background: a crop of a real image, resized to cover every view at every t
        canvas_half = view_half + self._pan_amp + 2
        canvas_w, canvas_h = (int(math.ceil(v)) for v in 2 * canvas_half + 1)
        self._canvas_origin = self._centre - canvas_half  # scene point at canvas pixel (0, 0)
        self._canvas = _background(backgrounds[rng.integers(len(backgrounds))], canvas_w, canvas_h, rng)

        # objects, back to front; classes cycle through 1.. so every class shows up in a busy clip
        margin = (cfg.object_speed + cfg.camera_speed) * ref + 4  # > any per-frame move relative to the view
        first = int(rng.integers(1, cfg.num_classes))
        self._objects = [
            _Object(1 + (first - 1 + i) % (cfg.num_classes - 1), cfg, view_half + margin, rng)
            for i in range(cfg.objects)
        ]
        rng.shuffle(self._objects)  # depth order independent of class
        self._xs = np.arange(w, dtype=np.float64)
        self._ys = np.arange(h, dtype=np.float64)[:, None]

    # -- transforms at time t

    def _camera(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 scene -> image matrix, scene point at the image centre) at time t."""
        pan = self._pan_amp * np.sin(self._pan_w * t + self._pan_phase)
        roll = self._roll_amp * math.sin(self._roll_w * t + self._roll_phase)
        zoom = math.exp(self._zoom_amp * math.sin(self._zoom_w * t + self._zoom_phase))
        view_centre = self._centre + pan
        cam = _translation(*self._centre) @ _similarity(zoom, roll, 0.0, 0.0) @ _translation(*-view_centre)
        return cam, view_centre

    def _poses(self, t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(camera matrix, [local -> image matrix of each object, back to front]) at time t."""
        cam, view_centre = self._camera(t)
        return cam, [cam @ o.pose(t, view_centre) for o in self._objects]

    def _slice(self, box: tuple[float, float, float, float]) -> tuple[slice, slice] | None:
        """(rows, cols) of the pixels whose centres may lie in box = (x0, x1, y0, y1); None if none."""
        x0, x1, y0, y1 = box
        c0, c1 = max(0, math.ceil(x0)), min(self.cfg.width, math.floor(x1) + 1)
        r0, r1 = max(0, math.ceil(y0)), min(self.cfg.height, math.floor(y1) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    # -- rendering

    def frame(self, t: int) -> SyntheticFrame:
        """Render frame t (int >= 0): image, labels, backward flow to t-1 and its validity."""
        t = operator.index(t)
        if t < 0:
            raise ValueError(f"frame index must be >= 0, got {t}")
        h, w = self.cfg.height, self.cfg.width
        xs, ys = self._xs, self._ys
        cam, mats = self._poses(t)
        to_canvas = _translation(*-self._canvas_origin) @ np.linalg.inv(cam)  # image -> canvas pixels
        image = cv2.warpAffine(self._canvas, to_canvas[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        labels = np.zeros((h, w), np.uint8)
        owner = np.full((h, w), -1, np.int16)  # object index, -1 = background
        if t > 0:
            prev_cam, prev_mats = self._poses(t - 1)
            # where each pixel's scene point was in frame t-1; background first, objects overwrite
            px, py = _apply(prev_cam @ np.linalg.inv(cam), xs, ys)  # (h, w) float64 each
        for k, (obj, m) in enumerate(zip(self._objects, mats)):
            sl = self._slice(_bbox(m, obj.radius))
            if sl is None:
                continue
            inv = np.linalg.inv(m)
            ux, uy = _apply(inv, xs[sl[1]], ys[sl[0]])
            mask = obj.inside(ux, uy)
            if not mask.any():
                continue
            off = obj.texture_offset
            patch = cv2.remap(obj.texture, (ux + off).astype(np.float32), (uy + off).astype(np.float32),
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            image[sl][mask] = patch[mask]
            labels[sl][mask] = obj.cls
            owner[sl][mask] = k
            if t > 0:  # local coordinates -> the same object's image position at t-1
                qx, qy = _apply(prev_mats[k], ux, uy)
                px[sl][mask], py[sl][mask] = qx[mask], qy[mask]
        if t == 0:
            return SyntheticFrame(image, labels, np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool))

        flow = np.empty((h, w, 2), np.float32)
        flow[..., 0] = px - xs
        flow[..., 1] = py - ys
        # who owned each (continuous) point p + flow in frame t-1: background unless an object covers it
        prev_owner = np.full((h, w), -1, np.int16)
        fx, fy = flow[..., 0], flow[..., 1]
        dx_lo, dx_hi, dy_lo, dy_hi = fx.min() - 1e-3, fx.max() + 1e-3, fy.min() - 1e-3, fy.max() + 1e-3
        for k, (obj, m) in enumerate(zip(self._objects, prev_mats)):
            x0, x1, y0, y1 = _bbox(m, obj.radius)
            sl = self._slice((x0 - dx_hi, x1 - dx_lo, y0 - dy_hi, y1 - dy_lo))  # pixels p with p + flow in that box
            if sl is None:
                continue
            ux, uy = _apply(np.linalg.inv(m), px[sl], py[sl])
            prev_owner[sl][obj.inside(ux, uy)] = k
        # inside frame t-1, with a margin so that rounding p + flow (in float32 or float64) gives a pixel index
        e = 1e-3
        inside = (px >= e - 0.5) & (px <= w - 0.5 - e) & (py >= e - 0.5) & (py <= h - 0.5 - e)
        valid = inside & (prev_owner == owner)
        return SyntheticFrame(image, labels, flow, valid)

    def frames(self, n: int, start: int = 0) -> Iterator[SyntheticFrame]:
        """Frames start, start + 1, ..., start + n - 1."""
        for t in range(start, start + n):
            yield self.frame(t)


def _background(src: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of src with the canvas's aspect ratio, resized to (height, width), maybe mirrored,
    with brightness/contrast jitter: uint8 (height, width, 3) BGR."""
    sh, sw = src.shape[:2]
    aspect = width / height
    cw = min(sw, sh * aspect) * math.sqrt(rng.uniform(0.45, 1.0))
    cw, ch = min(sw, max(2, round(cw))), min(sh, max(2, round(cw / aspect)))
    x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    canvas = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=interp)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    canvas = np.ascontiguousarray(canvas)
    return cv2.addWeighted(canvas, rng.uniform(0.8, 1.2), canvas, 0.0, rng.uniform(-20, 20))  # saturating
