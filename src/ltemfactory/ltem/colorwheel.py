"""HSV colour-wheel rendering of an in-plane vector field (e.g. the TIE induction).

Hue = direction: angle atan2(v_y, v_x) measured from +x toward +y (red = +x, then yellow,
green, cyan at −x, blue, magenta); the magnitude sets the value (black centre) or the
saturation (white centre). Arrays are (..., row, col) with y growing with the row index, so
plot with ``origin="lower"`` to see +y up; the legend follows the same convention.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ltemfactory.errors import ConfigError

__all__ = ["colorwheel_legend", "hsv_to_rgb", "vector_to_rgb"]


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV (each (...), h in [0, 1), s, v in [0, 1]) → RGB (..., 3) in [0, 1]."""
    h6 = (h % 1.0) * 6.0
    k = torch.stack([(5.0 + h6) % 6.0, (3.0 + h6) % 6.0, (1.0 + h6) % 6.0], dim=-1)
    # standard closed form: c = v - v s max(0, min(k, 4 - k, 1))
    w = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] - v[..., None] * s[..., None] * w


def vector_to_rgb(
    vx: torch.Tensor | np.ndarray,
    vy: torch.Tensor | np.ndarray,
    *,
    max_norm: float | None = None,
    background: str = "black",
) -> torch.Tensor:
    """RGB image (..., ny, nx, 3) float in [0, 1] of the vector field (vx, vy) (each (..., ny, nx)).

    ``max_norm``: magnitude mapped to full value/saturation (default: the maximum per call);
    ``background``: "black" (zero vector → black) or "white" (zero vector → white).
    """
    vx = torch.as_tensor(vx)
    vy = torch.as_tensor(vy, device=vx.device)
    dt = vx.dtype if vx.dtype.is_floating_point else torch.float32
    vx, vy = vx.to(dt), vy.to(dt)
    mag = torch.sqrt(vx * vx + vy * vy)
    norm = float(mag.max()) if max_norm is None else float(max_norm)
    r = torch.clamp(mag / norm, 0.0, 1.0) if norm > 0 else torch.zeros_like(mag)
    hue = (torch.atan2(vy, vx) / (2 * math.pi)) % 1.0
    if background == "black":
        return hsv_to_rgb(hue, torch.ones_like(r), r)
    if background == "white":
        return hsv_to_rgb(hue, r, torch.ones_like(r))
    raise ConfigError(f"background: expected 'black' or 'white', got {background!r}")


def colorwheel_legend(size: int = 128, *, background: str = "black") -> torch.Tensor:
    """Colour-wheel legend (size, size, 3): unit disc of the mapping, outside = background.

    Pixel (row, col) shows the vector (col − c, row − c)/c, c = (size − 1)/2
    (+y up when plotted with origin="lower").
    """
    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(
        (torch.arange(size, dtype=torch.float32) - c) / c,
        (torch.arange(size, dtype=torch.float32) - c) / c,
        indexing="ij",
    )
    rgb = vector_to_rgb(xx, yy, max_norm=1.0, background=background)
    outside = (xx * xx + yy * yy) > 1.0
    fill = 0.0 if background == "black" else 1.0
    return torch.where(outside[..., None], torch.full_like(rgb, fill), rgb)
