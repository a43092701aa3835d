"""Box helpers shared by every stage: boxes are [x1, y1, x2, y2] in displayed-image pixels."""

from __future__ import annotations

__all__ = ["XYXY", "iou", "covered"]

XYXY = tuple[int, int, int, int]


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def covered(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """Share of box a's area that lies inside box b (0 when a is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0
