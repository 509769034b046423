"""Batched energy minimisation on the unit sphere: preconditioned projected steepest descent
with Barzilai–Borwein step sizes.

The method of Exl et al., J. Appl. Phys. 115, 17D118 (2014), which mumax3's ``minimize`` uses
(Vansteenkiste et al., AIP Advances 4, 107133 (2014)), descends along the projected gradient
g = m × (m × h) with h = H_eff / Ms_ref, renormalises, and alternates the two Barzilai–Borwein
step sizes computed from the last step s = Δm and the change of the gradient y = Δg.

Here the descent direction is d = Π P g: the gradient smoothed by the exchange preconditioner
P(k) = 1 / (1 + c ℓ² k²) (ℓ² = 2A/(μ0 Ms_ref²), c = ``preconditioner_scale``, applied per
component by FFT) and projected back onto the tangent plane (Π). Exchange makes the energy
stiff at large k and skyrmion translations make it soft at small k; P evens out that spread,
and on Fe3GeTe2 lattices it cuts the iterations 5–10× (c = 0.1; c = 0 is plain BB). It is a
valid descent direction (g·d = g·P g > 0) for periodic and open films alike. With P the step
sizes read τ₁ = (s·P⁻¹s)/(s·y) ≈ −τ (g·s)/(s·y) and τ₂ = (s·y)/(y·Π P y).

Every batch member has its own step size, is checked for
convergence on max |m × h| < tolerance, and leaves the batch once converged so the remaining
members run on a smaller (cheaper) batch. Members still above tolerance after
``max_iterations`` are returned with ``converged = False``; callers must not treat them as
relaxed states.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ltemfactory.constants import MU0
from ltemfactory.micromagnetics.energy import EnergyModel
from ltemfactory.micromagnetics.film import Film
from ltemfactory.micromagnetics.reductions import cell_sum

log = logging.getLogger(__name__)

MAX_ROTATION = 0.3
"""Largest rotation [rad] of any moment in one step; bounds the first BB steps from far away."""


@dataclass
class MinimizeResult:
    """Relaxed states and how they got there.

    Attributes:
        m: relaxed unit field, (B, 3, nz, ny, nx); zero in empty cells.
        iterations: iterations used per member, (B,).
        converged: max reduced torque fell below the tolerance, (B,).
        max_torque: final max |m × H_eff| / Ms_ref per member, (B,) [dimensionless].
    """

    m: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    max_torque: torch.Tensor


def normalize(m: torch.Tensor) -> torch.Tensor:
    """Unit vectors along dim 1; zero vectors stay zero."""
    norm = _norm(m)
    return m / torch.where(norm > 0, norm, torch.ones_like(norm))


def _norm(v: torch.Tensor) -> torch.Tensor:
    """|v| along dim 1, kept (much faster on CPU than linalg.vector_norm over a middle dim)."""
    return (v * v).sum(dim=1, keepdim=True).sqrt()


def _projected_gradient(model: EnergyModel, m: torch.Tensor) -> torch.Tensor:
    """g = m × (m × h) = (m·h) m − h, h = H_eff / Ms_ref (reduced, per member)."""
    h = model.effective_field(m) * model.inv_ms_ref
    return (m * h).sum(dim=1, keepdim=True) * m - h


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-member inner product Σ a·b, (B,) (mul + sum: ~20× faster than einsum's batched dot
    on the CPU), the same bits for any thread count (:mod:`.reductions`)."""
    return cell_sum(a * b, a.ndim - 1)


def _max_norm(g: torch.Tensor) -> torch.Tensor:
    """max over cells of |g|, (B,)."""
    return (g * g).sum(dim=1).flatten(1).amax(dim=1).sqrt()


class ExchangePreconditioner:
    """P(k) = 1/(1 + c ℓ² k²) per member on the in-plane FFT grid (identity when c = 0)."""

    def __init__(self, film: Film, scale: float) -> None:
        self.kernel: torch.Tensor | None = None
        if scale < 0:
            raise ValueError(f"preconditioner_scale: expected >= 0, got {scale!r}")
        if scale == 0:
            return
        ny, nx = film.shape[1:]
        real = film.Ms.dtype
        dx = film.cell[:, 0].view(-1, 1, 1)
        dy = film.cell[:, 1].view(-1, 1, 1)
        ky = 2 * math.pi * torch.fft.fftfreq(ny, device=dx.device, dtype=real).view(1, -1, 1) / dy
        kx = 2 * math.pi * torch.fft.rfftfreq(nx, device=dx.device, dtype=real).view(1, 1, -1) / dx
        ell2 = (2 * film.A / (MU0 * film.Ms_ref**2)).view(-1, 1, 1)
        kernel = 1.0 / (1.0 + scale * ell2 * (kx**2 + ky**2))
        self.kernel = kernel.view(film.batch, 1, 1, ny, nx // 2 + 1)

    def select(self, keep: torch.Tensor) -> None:
        if self.kernel is not None:
            self.kernel = self.kernel[keep]

    def direction(self, m: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Π P v: preconditioned, projected onto the tangent plane at m, zero in empty cells."""
        if self.kernel is None:
            return v
        pv = torch.fft.irfft2(torch.fft.rfft2(v) * self.kernel, s=v.shape[-2:])
        return (pv - (m * pv).sum(dim=1, keepdim=True) * m) * mask


def minimize(
    film: Film,
    m0: torch.Tensor,
    tolerance: float = 1e-2,
    max_iterations: int = 20000,
    *,
    progress: bool = False,
    description: str = "relax",
    preconditioner_scale: float = 0.1,
) -> MinimizeResult:
    """Relax the batch ``film`` from ``m0`` (B, 3, nz, ny, nx) to a local energy minimum.

    Args:
        film: the batch of films (device and dtype of its tensors are used throughout).
        m0: start field, (B, 3, nz, ny, nx); normalised here.
        tolerance: converged when max over cells of |m × H_eff| / Ms_ref < tolerance.
        max_iterations: iteration budget per member.
        progress: show a tqdm bar (it switches itself off when stderr is not a terminal).
        description: label of the progress bar.
        preconditioner_scale: c of the exchange preconditioner (module docstring); 0 = none.
    """
    if m0.shape[0] != film.batch or tuple(m0.shape[2:]) != film.shape or m0.shape[1] != 3:
        raise ValueError(
            f"m0: expected shape ({film.batch}, 3, *{film.shape}), got {tuple(m0.shape)}"
        )
    mask = film.magnetic.unsqueeze(1)
    m_all = normalize(m0.to(film.Ms)) * mask
    b = film.batch
    device = film.Ms.device
    iterations = torch.zeros(b, dtype=torch.long, device=device)
    converged = torch.zeros(b, dtype=torch.bool, device=device)
    max_torque = torch.full((b,), float("inf"), dtype=film.Ms.dtype, device=device)

    active = torch.arange(b, device=device)
    mask_a = mask  # the magnetic cells of the active members
    sub = film
    model = EnergyModel(sub)
    precond = ExchangePreconditioner(film, preconditioner_scale)
    m = m_all
    g = _projected_gradient(model, m)
    d = precond.direction(m, g, mask_a)
    gmax = _max_norm(g)
    tau = MAX_ROTATION / _max_norm(d).clamp(min=1e-12)

    bar = tqdm(total=max_iterations, desc=description, disable=not progress, leave=False)
    it = 0
    while True:
        done = gmax < tolerance
        if it >= max_iterations:
            done = torch.ones_like(done)
        if bool(done.any()):
            idx = active[done]
            m_all[idx] = m[done]
            iterations[idx] = it
            converged[idx] = gmax[done] < tolerance
            max_torque[idx] = gmax[done]
            keep = ~done
            if not bool(keep.any()):
                break
            active, m, g, d, mask_a = active[keep], m[keep], g[keep], d[keep], mask_a[keep]
            gmax, tau = gmax[keep], tau[keep]
            precond.select(keep)
            sub = film.select(active)
            model = EnergyModel(sub)
        # BB step, bounded so no moment turns by more than MAX_ROTATION in one step
        tau_eff = torch.minimum(tau, MAX_ROTATION / _max_norm(d).clamp(min=1e-12))
        # empty cells keep m = 0: their field, hence g and d, is zero
        m_new = normalize(m - tau_eff.view(-1, 1, 1, 1, 1) * d)
        g_new = _projected_gradient(model, m_new)
        s, y = m_new - m, g_new - g
        sy = _dot(s, y)
        if it % 2 == 0:
            bb = -tau_eff * _dot(g, s) / sy
        else:
            bb = sy / _dot(y, precond.direction(m_new, y, mask_a))
        ok = torch.isfinite(bb) & (bb > 0) & (sy > 0)
        tau = torch.where(ok, bb, 2 * tau_eff)
        m, g = m_new, g_new
        d = precond.direction(m, g, mask_a)
        gmax = _max_norm(g)
        it += 1
        if progress and it % 50 == 0:
            bar.update(50)
            bar.set_postfix(active=int(active.numel()), torque=f"{float(gmax.max()):.2e}")
    bar.close()
    n_bad = int((~converged).sum())
    if n_bad:
        log.warning(
            "%d of %d states did not converge within %d iterations", n_bad, b, max_iterations
        )
    return MinimizeResult(
        m=m_all, iterations=iterations, converged=converged, max_torque=max_torque
    )
