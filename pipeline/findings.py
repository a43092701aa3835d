"""Findings and their codes: the JSON contract's check codes, the EMO error each pre-empts,
and the hint for the person who took the photo (or recorded the audio).

One row per code, hints in English and Chinese (the service's users are mostly in China).
Messages with measured values are written where the value is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CodeInfo", "CODES", "COVER_HINTS", "Finding", "Severity", "Verdict"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class CodeInfo:
    api_code: str
    """The service error this finding pre-empts (spec section 3)."""
    hint: str
    hint_zh: str


CODES: dict[str, CodeInfo] = {
    "unreadable": CodeInfo(
        "InvalidURL",
        "The file is not a readable image (empty, truncated or not a picture). Export it again as JPEG.",
        "文件无法读取（为空、不完整或不是图片），请重新导出为 JPEG。"),
    "unsupported_format": CodeInfo(
        "InvalidURL",
        "Use a still JPEG, PNG, BMP or WebP photo.",
        "请使用静态的 JPEG、PNG、BMP 或 WebP 照片。"),
    "image_too_small": CodeInfo(
        "InvalidFile.Resolution",
        "Use a larger photo: at least 400 px on the shorter side.",
        "请使用更大的照片：短边至少 400 像素。"),
    "image_too_large": CodeInfo(
        "InvalidFile.Resolution",
        "Use a photo at most 7000 px on the longer side (emo-prep can downscale it for you).",
        "照片长边不能超过 7000 像素（可由 emo-prep 自动缩小）。"),
    "no_face": CodeInfo(
        "InvalidFile.NoHuman",
        "Use a photo where one person's face is clearly visible, facing the camera.",
        "请使用能清楚看到一个人正脸的照片。"),
    "multiple_faces": CodeInfo(
        "InvalidFile.MultiHuman",
        "Use a photo with only one person in it, or crop the others out.",
        "照片中只能有一个人，请裁掉其他人。"),
    "face_too_small": CodeInfo(
        "InvalidFile.BodyProportion",
        "Move closer or crop the photo so the face fills more of the frame.",
        "请靠近拍摄或裁剪照片，让人脸在画面中更大一些。"),
    "face_too_large": CodeInfo(
        "InvalidFile.BodyProportion",
        "Step back: the whole head, some hair and the shoulders should be in the frame.",
        "请离远一点拍摄：画面应包含整个头部、部分头发和肩膀。"),
    "face_cut_off": CodeInfo(
        "InvalidFile.FullFace",
        "The face touches the edge of the photo; frame the whole face with some space around it.",
        "人脸被画面边缘截断，请让整张脸完整出现在画面中并留出空间。"),
    "face_occluded": CodeInfo(
        "InvalidFile.FullFace",
        "Uncover the face: the eyes, nose and mouth must all be visible.",
        "请露出完整的脸：眼睛、鼻子和嘴巴都必须清晰可见。"),
    "pose": CodeInfo(
        "InvalidFile.FacePose",
        "Face the camera with the head upright and look straight ahead.",
        "请正对镜头，头部摆正，目视前方。"),
    "blur": CodeInfo(
        "InvalidFile.Value",
        "The face is not sharp: hold the camera still, focus on the face and use more light.",
        "人脸不清晰：请保持相机稳定、对焦在脸上，并增加光线。"),
    "dark": CodeInfo(
        "InvalidFile.Value",
        "The face is too dark: take the photo in better light, facing the light source.",
        "人脸太暗：请在光线充足处面向光源拍摄。"),
    "overexposed": CodeInfo(
        "InvalidFile.Value",
        "The face is washed out: avoid direct flash or strong sunlight on the face.",
        "人脸过曝：请避免闪光灯或强光直射面部。"),
    "body_cut_off": CodeInfo(
        "InvalidFile.FullBody",
        "For a half-body (3:4) video the person must be visible from the head down to the hips.",
        "半身视频（3:4）要求从头部到髋部完整可见。"),
    "manifest_invalid": CodeInfo(
        "InvalidParameter",
        "Fix this row of the manifest: it needs a photo path, a ratio of 1:1 or 3:4 and a style of "
        "normal, calm or active.",
        "请修正清单中的这一行：需要照片路径、比例 1:1 或 3:4、风格 normal/calm/active。"),
    "audio_unreadable": CodeInfo(
        "InvalidURL",
        "The audio file cannot be read (empty, truncated or not audio). Export it again as MP3 or WAV.",
        "音频文件无法读取（为空、不完整或不是音频），请重新导出为 MP3 或 WAV。"),
    "audio_unsupported_format": CodeInfo(
        "InvalidURL",
        "Use a WAV or MP3 audio file.",
        "请使用 WAV 或 MP3 格式的音频。"),
    "audio_too_large": CodeInfo(
        "InvalidURL",
        "The audio file must be under 15 MB: shorten it or export it as MP3.",
        "音频文件需小于 15 MB：请缩短或导出为 MP3。"),
    "audio_too_long": CodeInfo(
        "InvalidURL",
        "The audio must be shorter than 60 seconds: cut it into shorter clips.",
        "音频时长需少于 60 秒：请剪成更短的片段。"),
    "audio_silent": CodeInfo(
        "InvalidURL",
        "The audio is nearly silent: record a clear, loud voice without background music.",
        "音频几乎无声：请录制清晰响亮、无背景音乐的人声。"),
}

#: face_occluded: what covers the face -> the hint (English, Chinese) saying what to change.
COVER_HINTS: dict[str, tuple[str, str]] = {
    "mask": ("Take off the face mask: the nose and the mouth must be visible.",
             "请摘下口罩：鼻子和嘴巴必须露出来。"),
    "cover": ("Uncover the mouth: take away the scarf, mask or object in front of the lips.",
              "请露出嘴巴：拿开嘴前的围巾、口罩或物品。"),
    "hand": ("Move the hand away from the face: the mouth must be visible.",
             "请把手从脸前拿开：嘴巴必须露出来。"),
    "sunglasses": ("Take off the sunglasses: both eyes must be visible.",
                   "请摘下墨镜：双眼必须清晰可见。"),
    "eye": ("Both eyes must be visible: move hair, hands or objects away from the eye.",
            "双眼都必须可见：请拨开遮住眼睛的头发、手或物品。"),
}


@dataclass(frozen=True)
class Finding:
    """One problem (error) or risk (warning) found in an input."""

    code: str
    severity: Severity
    message: str
    value: float | None = None
    limit: float | None = None
    covered: tuple[str, ...] = ()
    """face_occluded: the parts covered ("nose", "mouth", "right_eye", "left_eye")."""
    causes: tuple[str, ...] = ()
    """face_occluded: what covers them, keys of COVER_HINTS; the hint says what to change."""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"Finding.code: expected one of {sorted(CODES)}, got {self.code!r}")
        unknown = [c for c in self.causes if c not in COVER_HINTS]
        if unknown:
            raise ValueError(f"Finding.causes: expected keys of {sorted(COVER_HINTS)}, got {unknown}")

    def _hints(self) -> tuple[str, str]:
        if not self.causes:
            return CODES[self.code].hint, CODES[self.code].hint_zh
        return (" ".join(COVER_HINTS[c][0] for c in self.causes), "".join(COVER_HINTS[c][1] for c in self.causes))

    @property
    def hint(self) -> str:
        return self._hints()[0]

    @property
    def api_code(self) -> str:
        return CODES[self.code].api_code

    def to_dict(self) -> dict[str, Any]:
        hint, hint_zh = self._hints()
        out = {"code": self.code, "severity": self.severity,
               "value": None if self.value is None else round(float(self.value), 3),
               "limit": None if self.limit is None else round(float(self.limit), 3),
               "message": self.message, "hint": hint, "hint_zh": hint_zh,
               "api_code": CODES[self.code].api_code}
        if self.covered:
            out["covered"] = list(self.covered)
        return out


class Verdict:
    """ok / errors of anything that carries `findings` (photo and audio reports)."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]
