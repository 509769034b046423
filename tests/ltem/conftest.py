"""Analytic magnetisation textures for the LTEM tests."""

import math

import torch

F64 = torch.float64


def stripes_x(
    ny: int, nx: int, width: int, nz: int = 1, wall_px: float = 0.0, dtype=F64
) -> torch.Tensor:
    """m ≈ (±1, 0, 0) in stripes of ``width`` rows: +x for rows [0, w), −x for [w, 2w), ...

    Walls run along x (m varies along y only, so div m = 0 and B = μ0 M inside the film). With
    ``wall_px`` > 0 the walls are resolved Bloch-like walls, m = (tanh(s/δ), 0, ±sech(s/δ)) with s
    the signed distance [px] to the wall and alternating wall m_z (zero mean; |m| = 1; m_z adds no
    phase at zero tilt), else sharp.
    Shape (3, nz, ny, nx).
    """
    rows = torch.arange(ny, dtype=F64) + 0.5  # walls at integer rows k·w sit between pixels
    period = 2 * width
    phase = torch.remainder(rows, period)  # in [0, 2w)
    # signed distance to the nearest wall, positive inside +x stripes
    s = torch.minimum(phase, width - phase) * (phase < width) - torch.minimum(
        phase - width, period - phase
    ) * (phase >= width)
    m = torch.zeros(3, nz, ny, nx, dtype=F64)
    if wall_px > 0:
        chirality = 1.0 - 2.0 * (torch.round(rows / width) % 2)  # m_z of the walls alternates
        m[0] = torch.tanh(s / wall_px)[None, :, None]
        m[2] = (chirality / torch.cosh(s / wall_px))[None, :, None]
    else:
        m[0] = torch.sign(s)[None, :, None]
    return m.to(dtype)


def skyrmion(
    n: int,
    dx: float,
    radius: float,
    wall: float,
    kind: str = "bloch",
    nz: int = 1,
    dtype=F64,
) -> torch.Tensor:
    """Isolated skyrmion at the grid centre, core m_z = −1, background +1. Shape (3, nz, n, n).

    Profile Θ(r) = 2 arctan(sinh(R/w) / sinh(r/w)) (Θ(0) = π exactly, smooth, decays as e^{−r/w});
    in-plane direction ψ = φ (Néel, radial, curl-free) or φ + π/2 (Bloch, azimuthal, div-free).
    """
    c = (n - 1) / 2
    y, x = torch.meshgrid(
        (torch.arange(n, dtype=F64) - c) * dx, (torch.arange(n, dtype=F64) - c) * dx, indexing="ij"
    )
    r = torch.sqrt(x**2 + y**2)
    theta = 2 * torch.atan2(torch.full_like(r, math.sinh(radius / wall)), torch.sinh(r / wall))
    phi = torch.atan2(y, x) + (math.pi / 2 if kind == "bloch" else 0.0)
    s = torch.sin(theta)
    m = torch.stack([s * torch.cos(phi), s * torch.sin(phi), torch.cos(theta)])
    return m[:, None].expand(3, nz, n, n).to(dtype).contiguous()


def random_unit(shape, gen: torch.Generator, dtype=F64) -> torch.Tensor:
    m = torch.randn(shape, generator=gen, dtype=dtype)
    return m / m.norm(dim=-4, keepdim=True)
