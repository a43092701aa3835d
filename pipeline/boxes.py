"""Box helpers shared by every stage: boxes are [x1, y1, x2, y2] in displayed-image pixels."""

from __future__ import annotations

__all__ = ["XYXY", "iou", "covered"]

XYXY = tuple[int, int, int, int]
Box = tuple[float, ...] | list[float]


def _area(a: Box) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def _intersection(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when either is empty)."""
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def covered(a: Box, b: Box) -> float:
    """Share of box a's area that lies inside box b (0 when a is empty)."""
    area = _area(a)
    return _intersection(a, b) / area if area > 0 else 0.0
