"""The photo rules: each turns a measurement into findings with a code, a limit and a hint.

Each code of the DESIGN table has exactly one function here, and every limit comes from
`CheckConfig`. Measurements that need pixels (sharpness, brightness) are pure functions
over the working copy.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .body import Hips
from .config import CheckConfig
from .faces import Face, HeadPose
from .findings import Finding
from .ingest import ImageInfo
from .occlusion import Coverage

__all__ = ["ORDER", "image_size", "counts_as_face", "face_count", "face_size", "face_cut_off", "face_occluded", "pose",
           "upside_down", "blur", "exposure", "body_cut_off", "face_presence", "faint_face", "face_sharpness",
           "face_luma", "face_highlights", "ext_fit"]

#: Precedence of the codes: a photo's first error is its reason (labels' README order).
ORDER = ("unreadable", "unsupported_format", "image_too_small", "image_too_large", "no_face",
         "multiple_faces", "face_too_small", "face_too_large", "face_cut_off", "face_occluded", "pose", "blur",
         "dark", "overexposed", "body_cut_off")
#: Side of the face crop on which sharpness is measured, so the score does not depend on
#: the photo's resolution.
SHARPNESS_SIDE = 128
#: Contrast (grey-level standard deviation) the face is scaled to before measuring, and the
#: smallest spread scaled up (below it, noise would be amplified into "detail").
SHARPNESS_CONTRAST, SHARPNESS_MIN_STD = 50.0, 2.0


def _graded(code: str, value: float, error_at: float, warn_at: float, above: bool, what: str) -> list[Finding]:
    """An error past `error_at`, a warning past `warn_at` (above or below the limits)."""
    past = (lambda v, lim: v > lim) if above else (lambda v, lim: v < lim)
    word = "above" if above else "below"
    if past(value, error_at):
        return [Finding(code, "error", f"{what} {value:.1f} is {word} the limit {error_at:g}", value, error_at)]
    if past(value, warn_at):
        return [Finding(code, "warning", f"{what} {value:.1f} is close to the limit {error_at:g}", value, warn_at)]
    return []


def image_size(info: ImageInfo, cfg: CheckConfig) -> list[Finding]:
    """The service's resolution rule: shorter side >= 400 px, longer side <= 7000 px."""
    short, long = min(info.width, info.height), max(info.width, info.height)
    out = []
    if short < cfg.min_side:
        out.append(Finding("image_too_small", "error",
                           f"shorter side is {short} px; the service needs at least {cfg.min_side}",
                           short, cfg.min_side))
    if long > cfg.max_side:
        out.append(Finding("image_too_large", "error",
                           f"longer side is {long} px; the service accepts at most {cfg.max_side} "
                           f"(the upload form can be downscaled)", long, cfg.max_side))
    return out


def counts_as_face(score: float, presence: Callable[[], float], cfg: CheckConfig) -> bool:
    """A detection is a face from min_face_score; a weaker one when the mesh model confirms
    it (crowds, tiny and cut-off faces score low). `presence` is asked only then."""
    return score >= cfg.min_face_score or presence() >= cfg.confirm_mesh_presence


def face_count(detected: list[Face], faces: list[Face], primary: Face | None, cfg: CheckConfig) -> list[Finding]:
    """no_face when no detection counts as a face; multiple_faces for a second face of real
    size. `detected` is every detection, `faces` those that count (see `counts_as_face`)."""
    if primary is None:
        best = max((f.score for f in detected), default=0.0)
        return [Finding("no_face", "error",
                        f"no face scores {cfg.min_face_score:g} or more (best {best:.2f}), and no weaker "
                        f"detection is confirmed by the face mesh", best, cfg.min_face_score)]
    others = [f for f in faces if f is not primary and f.side >= cfg.other_face_min_rel_side * primary.side]
    if others:
        rel = max(f.side for f in others) / primary.side
        return [Finding("multiple_faces", "error",
                        f"{len(others) + 1} faces; the largest other one is {rel:.2f} of the main face's size",
                        len(others) + 1, 1)]
    return []


def ext_fit(ext_found: bool, ratio: str, cfg: CheckConfig) -> list[Finding]:
    """No ext_bbox of at least the floor fits: too large for 1:1, body missing for 3:4."""
    if ext_found:
        return []
    if ratio == "1:1":
        return [Finding("face_too_large", "error",
                        f"no square crop of at least {cfg.ext_floor_11:g} face widths fits in the photo",
                        None, cfg.ext_floor_11)]
    return [Finding("body_cut_off", "error",
                    f"no 3:4 crop of at least {cfg.ext_floor_34:g} face widths fits in the photo",
                    None, cfg.ext_floor_34)]


def face_size(face: Face, info: ImageInfo, ratio: str, cfg: CheckConfig) -> list[Finding]:
    """Face height and area as shares of the photo (the labels' BodyProportion rule)."""
    x1, y1, x2, y2 = face.xyxy
    h_share = (y2 - y1) / info.height
    area_share = (x2 - x1) * (y2 - y1) / (info.width * info.height)
    small = cfg.face_too_small_h_11 if ratio == "1:1" else cfg.face_too_small_h_34
    if h_share <= small:
        return [Finding("face_too_small", "error",
                        f"the face is {h_share:.0%} of the photo's height; more than {small:.0%} is needed",
                        h_share, small)]
    if h_share >= cfg.face_too_large_h:
        return [Finding("face_too_large", "error",
                        f"the face is {h_share:.0%} of the photo's height; keep it under {cfg.face_too_large_h:.0%}",
                        h_share, cfg.face_too_large_h)]
    if area_share >= cfg.face_too_large_area:
        return [Finding("face_too_large", "error",
                        f"the face covers {area_share:.0%} of the photo; keep it under {cfg.face_too_large_area:.0%}",
                        area_share, cfg.face_too_large_area)]
    return []


def face_cut_off(face: Face, info: ImageInfo, cfg: CheckConfig) -> list[Finding]:
    """Share of the (unclipped) face box that lies outside the photo."""
    x1, y1, x2, y2 = face.xyxy
    inside_w = max(0.0, min(x2, info.width) - max(x1, 0.0))
    inside_h = max(0.0, min(y2, info.height) - max(y1, 0.0))
    share = 1.0 - inside_w * inside_h / max((x2 - x1) * (y2 - y1), 1e-9)
    if share >= cfg.face_cut_off_share:
        return [Finding("face_cut_off", "error",
                        f"{share:.0%} of the face lies outside the photo", share, cfg.face_cut_off_share)]
    if share >= cfg.warn_face_cut_off_share:
        return [Finding("face_cut_off", "warning",
                        f"the face touches the border ({share:.0%} outside)", share, cfg.warn_face_cut_off_share)]
    return []


def face_occluded(coverage: Callable[[], Coverage], hand_presence: Callable[[Coverage], float], score: float,
                  so_far: list[Finding], cfg: CheckConfig) -> list[Finding]:
    """Mouth, nose or eyes covered (mask, scarf, hand, sunglasses, hair over an eye).

    Judged only on a face with no error yet but the 3:4 body's (which comes later in ORDER
    and does not touch the face): a turned, blurred, dark, cut-off or doubtful face moves the
    measurements and already has its reason; `coverage` is measured only then.
    `hand_presence` (a model run) is asked only when the pixels alone do not already show
    the mouth covered and the detector is less sure of the face than `hand_check_below_score`
    (`score`): a hand over the mouth hides features the detector leans on.
    """
    if any(f.severity == "error" and f.code != "body_cut_off" for f in so_far):
        return []
    cov = coverage()
    covered: list[str] = []
    causes: list[str] = []
    deciding: list[tuple[str, float, float]] = []  # (what, value, limit) for the message
    def behind_lens(warmth: float | None, lightness: float) -> bool:
        return warmth is not None and warmth < cfg.min_cover_warmth and lightness < cfg.max_lens_lightness

    hidden = [name for name, contrast in cov.eye_contrast.items()
              if contrast < cfg.min_eye_contrast or behind_lens(*cov.below_eye[name])]
    if hidden:
        covered += hidden
        causes.append("sunglasses" if len(hidden) == 2 else "eye")
        eyes = " and ".join(n.replace("_", " ") for n in hidden)
        flat = [cov.eye_contrast[n] for n in hidden if cov.eye_contrast[n] < cfg.min_eye_contrast]
        if flat:
            deciding.append((f"{eyes} contrast", min(flat), cfg.min_eye_contrast))
        else:
            dark = min(cov.below_eye[n][1] for n in hidden)
            deciding.append((f"lightness below the {eyes}, as behind a dark lens,", dark, cfg.max_lens_lightness))
    lips_cold = cov.lips_warmth is not None and cov.lips_warmth < cfg.min_cover_warmth
    if lips_cold or cov.mouth_contrast < cfg.min_mouth_contrast:
        nose_cold = cov.nose_warmth is not None and cov.nose_warmth < cfg.min_cover_warmth
        covered += ["nose", "mouth"] if nose_cold else ["mouth"]
        causes.append("mask" if nose_cold else "cover")
        if lips_cold:
            deciding.append(("lips warmth against the skin", cov.lips_warmth, cfg.min_cover_warmth))
        else:
            deciding.append(("mouth contrast", cov.mouth_contrast, cfg.min_mouth_contrast))
    elif score < cfg.hand_check_below_score:
        hand = hand_presence(cov)
        if hand > cfg.max_hand_presence:
            covered.append("mouth")
            causes.append("hand")
            deciding.append(("hand presence over the mouth", hand, cfg.max_hand_presence))
    if not covered:
        return []
    what, value, limit = deciding[0]
    return [Finding("face_occluded", "error",
                    f"the {', '.join(p.replace('_', ' ') for p in covered)} look{'s' if len(covered) == 1 else ''} "
                    f"covered ({what} {value:.2f}, limit {limit:g})", value, limit,
                    covered=tuple(covered), causes=tuple(causes))]


def pose(head: HeadPose, cfg: CheckConfig) -> list[Finding]:
    """Yaw, pitch and roll against their limits; the worst axis speaks."""
    if head.pitch >= 0:
        nod = (head.pitch, cfg.max_pitch_up, cfg.warn_pitch_up, "pitch (looking up)")
    else:
        nod = (-head.pitch, cfg.max_pitch_down, cfg.warn_pitch_down, "pitch (looking down)")
    axes = ((abs(head.yaw), cfg.max_yaw, cfg.warn_yaw, "yaw (head turned)"), nod,
            (abs(head.roll), cfg.max_roll, cfg.warn_roll, "roll (head tilted)"))
    errors = [a for a in axes if a[0] > a[1]]
    if errors:
        v, lim, _, what = max(errors, key=lambda a: a[0] / a[1])
        return [Finding("pose", "error", f"{what} is {v:.0f} degrees; the limit is {lim:g}", v, lim)]
    warns = [a for a in axes if a[0] > a[2]]
    if warns:
        v, _, lim, what = max(warns, key=lambda a: a[0] / a[2])
        return [Finding("pose", "warning", f"{what} is {v:.0f} degrees, above {lim:g}", v, lim)]
    return []


def upside_down(score: float, turned_score: Callable[[], float], so_far: list[Finding],
                cfg: CheckConfig) -> list[Finding]:
    """pose when the face scores higher with the photo turned over than as it is: the angles
    from the mesh miss it, since the mesh fits an upside-down face as if it were upright.
    `turned_score` is asked only when the answer can matter: not for a face scoring as only
    upright faces do, not after an error that comes before pose, nor on a dark face (on which
    the detector's scores are erratic)."""
    if score >= cfg.upright_min_score or any(
            f.severity == "error" and (ORDER.index(f.code) < ORDER.index("pose") or f.code == "dark") for f in so_far):
        return []
    turned = turned_score()
    if turned - score <= cfg.max_turned_score_gain:
        return []
    return [Finding("pose", "error", f"the photo looks upside down or rotated: the face scores {turned:.2f} "
                    f"turned by 180 degrees against {score:.2f} as it is", round(turned - score, 3),
                    cfg.max_turned_score_gain)]


def faint_face(score: float, so_far: list[Finding], cfg: CheckConfig) -> list[Finding]:
    """no_face when the main face is only a weak detection (confirmed by the mesh) and nothing
    else was found: such faces count, for the reasons they give, but never pass."""
    if score >= cfg.min_face_score or any(f.severity == "error" for f in so_far):
        return []
    return [Finding("no_face", "error", f"the face is only faintly detected (score {score:.2f}, "
                    f"{cfg.min_face_score:g} needed): turned, rotated, covered or not a real face?",
                    score, cfg.min_face_score)]


#: Errors that also lower a real face's presence score (part of the face missing, pose, blur,
#: light) or leave it open which face is doubtful (several): face_presence then keeps quiet.
_PRESENCE_EXPLAINED = ("multiple_faces", "face_too_large", "face_cut_off", "pose", "blur", "dark", "overexposed")


def face_presence(presence: float, so_far: list[Finding], cfg: CheckConfig) -> list[Finding]:
    """no_face when the mesh model doubts the detection is a face at all, unless an error
    that explains a low score was found. A small face does not: a pattern taken for a tiny
    face should be called no face, not told to move closer."""
    if presence >= cfg.min_mesh_presence or any(f.severity == "error" and f.code in _PRESENCE_EXPLAINED
                                                 for f in so_far):
        return []
    return [Finding("no_face", "error",
                    f"the face model's presence score is {presence:.2f}: probably not a real face",
                    presence, cfg.min_mesh_presence)]


def face_sharpness(gray_face: np.ndarray) -> float:
    """Variance of the Laplacian of the face at SHARPNESS_SIDE px, contrast-normalised.

    The face is resized to a fixed size (so resolution does not count) and scaled to a
    standard deviation of SHARPNESS_CONTRAST grey levels (so a dark but sharp face is not
    called blurred: darkness is the `dark` rule's business).
    """
    face = cv2.resize(gray_face, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    spread = max(float(face.std()), SHARPNESS_MIN_STD)
    face = (face - float(face.mean())) * (SHARPNESS_CONTRAST / spread)
    return float(cv2.Laplacian(face, cv2.CV_32F).var())


def face_luma(gray_face: np.ndarray) -> float:
    """Mean grey level (0-255) of the face region."""
    return float(gray_face.mean())


def face_highlights(gray_face: np.ndarray) -> float:
    """90th percentile grey level (0-255) of the face region: its lit skin, eye whites and
    highlights. A well-lit face of any skin tone has them; an underexposed one does not."""
    return float(np.percentile(gray_face, 90))


def blur(sharpness: float, cfg: CheckConfig) -> list[Finding]:
    return _graded("blur", sharpness, cfg.min_sharpness, cfg.warn_sharpness, False, "face sharpness")


def exposure(highlights: float, luma: float, cfg: CheckConfig) -> list[Finding]:
    """dark when even the face's bright parts are dim (its 90th percentile: a mean would hold
    darker skin to a stricter rule), overexposed when the face as a whole (its mean) is white."""
    return (_graded("dark", highlights, cfg.min_face_highlights, cfg.warn_face_highlights, False,
                    "brightness of the face's lit parts")
            or _graded("overexposed", luma, cfg.max_face_luma, cfg.warn_max_face_luma, True, "face brightness"))


def body_cut_off(hips: Hips, face: Face, info: ImageInfo, cfg: CheckConfig) -> list[Finding]:
    """3:4 only: both hips inside the sides, at least `hip_margin_faces` face sides above the
    bottom edge (the top of the thighs in the frame, not just the waist), and seen by the
    pose model (hidden or outside hips score low: visibility, not only a predicted point)."""
    lowest = max(y for _, y in hips.points)
    margin = (info.height - lowest) / face.side
    outside_x = any(x < 0 or x > info.width for x, _ in hips.points)
    if margin < cfg.hip_margin_faces or outside_x:
        return [Finding("body_cut_off", "error",
                        f"the hips are not clearly inside the photo (their margin to the bottom is "
                        f"{margin:.1f} face heights, {cfg.hip_margin_faces:g} needed)",
                        margin, cfg.hip_margin_faces)]
    if hips.visibility < cfg.hip_min_visibility:
        return [Finding("body_cut_off", "error",
                        f"the hips are not visible (pose model visibility {hips.visibility:.2f}, "
                        f"{cfg.hip_min_visibility:g} needed)", hips.visibility, cfg.hip_min_visibility)]
    return []
