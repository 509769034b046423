"""Micromagnetic energy terms of a thin film and their effective fields, batched in torch.

Energy density of the unit field m (physics.md §5):

    e = A |∇m|² + D [m_z ∇·m − (m·∇) m_z] − Ku m_z² − μ0 Ms H·m + (μ0 Ms²/2) m·(N*m)

**Discretisation.** Exchange and DMI are sums over nearest-neighbour bonds (i, j = i + r̂),

    E_ex  = Σ A (S/ℓ) |m_j − m_i|²,
    E_dmi = Σ D S (ẑ × r̂)·(m_i × m_j)       (in-plane bonds only: interfacial DMI),

with ℓ the bond length and S the cell face it crosses. Their gradients are the usual central
differences, ``H_ex = (2A/μ0Ms) ∇²m`` and ``H_dmi = (2D/μ0Ms)(∂x mz, ∂y mz, −∂x mx − ∂y my)``.
A bond exists only between two magnetic cells (and across the periodic edge when periodic), so
free edges carry the natural boundary condition of the discrete energy: the Rohart–Thiaville
condition ∂m/∂n = (D/2A)(n̂ × ẑ) × m in the continuum limit (Rohart & Thiaville,
Phys. Rev. B 88, 184422 (2013); the sign is that of this DMI convention: at the left end of a
wire, n̂ = −x̂, it reads ∂x mx = −(D/2A) mz, so with D > 0 and mz > 0 the edge cants towards +x).

**DMI sign and chirality.** For a spin spiral m = (cos kx, 0, sin kx) the exchange + DMI energy
density is A k² − D k, smallest at k = D/2A. With D > 0 a skyrmion whose core points down (−z)
in an up (+z) background is a Néel skyrmion with its in-plane moments pointing radially
*outward* (hedgehog, helicity 0); D < 0 turns them inward. Both facts are tested.

Every field is H = −(1/(μ0 Ms V)) ∂E/∂m, so the energies reported here are exactly those the
minimiser descends; the tests check the fields against autograd of the energies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltemfactory.constants import MU0
from ltemfactory.micromagnetics.demag import demag_field, demag_tensor, fft_shape
from ltemfactory.micromagnetics.film import Film
from ltemfactory.micromagnetics.reductions import cell_sum

TERMS = ("exchange", "dmi", "anisotropy", "zeeman", "demag")
"""Names of the energy terms, in the order reported everywhere."""


def _bond_masks(film: Film) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks of the bonds from cell (z, y, x) to its +x, +y and +z neighbours, (B, nz, ny, nx)."""
    mag = film.magnetic
    bonds = []
    for dim in (-1, -2, -3):
        b = mag & torch.roll(mag, shifts=-1, dims=dim)
        periodic = film.periodic and dim != -3  # layers are never periodic
        if not periodic:
            b = b.clone()
            b.narrow(dim, b.shape[dim] - 1, 1).zero_()
        bonds.append(b)
    return bonds[0], bonds[1], bonds[2]


def _shift(t: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Values of the neighbour at ``step`` (±1) along ``dim`` (a periodic roll; the bond masks
    remove the pairs that wrap around open edges)."""
    return torch.roll(t, shifts=-step, dims=dim)


@dataclass
class EnergyModel:
    """Effective fields and energies of a :class:`Film` batch; precomputes masks and kernels.

    ``m`` arguments are (B, 3, nz, ny, nx) unit vectors (values in empty cells are ignored).
    """

    film: Film

    def __post_init__(self) -> None:
        film = self.film
        dtype = film.Ms.dtype
        inv_ms = torch.where(film.magnetic, 1.0 / film.Ms.clamp(min=1e-30), 0.0).unsqueeze(1)
        self._mask = film.magnetic.to(dtype).unsqueeze(1)
        # bonds to the +1 and −1 neighbour along x (dim −1), y (dim −2) and z (dim −3)
        self._bonds = {}
        for dim, bond in zip((-1, -2, -3), _bond_masks(film), strict=True):
            if film.shape[3 + dim] > 1:
                b = bond.to(dtype).unsqueeze(1)
                self._bonds[dim] = (b, _shift(b, dim, -1))
        self._n_bonds = {dim: fwd + bwd for dim, (fwd, bwd) in self._bonds.items()}
        cell = film.cell.view(-1, 3, 1, 1, 1, 1)
        exchange = 2 * self._coef(film.A) / MU0 * inv_ms
        self._ex_coef = {  # 2A/(μ0 Ms ℓ²) per bond direction
            dim: exchange / cell[:, -1 - dim] ** 2 for dim in self._bonds
        }
        self._dmi_coef = {  # D/(μ0 Ms ℓ) for the in-plane directions
            dim: self._coef(film.D) / MU0 * inv_ms / cell[:, -1 - dim]
            for dim in (-1, -2)
            if dim in self._bonds
        }
        self._anis_coef = 2 * self._coef(film.Ku) / MU0 * inv_ms
        self.inv_ms_ref = 1.0 / self._coef(film.Ms_ref)
        """1/Ms_ref per member, (B, 1, 1, 1, 1) [m/A]: turns fields into reduced fields."""
        nz, ny, nx = film.shape
        self._kernel = (
            demag_tensor(nz, fft_shape((ny, nx), film.periodic), film.cell, dtype)
            if film.demag
            else None
        )

    @staticmethod
    def _coef(per_state: torch.Tensor) -> torch.Tensor:
        return per_state.view(-1, 1, 1, 1, 1)

    def _neighbours(self, m: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Bond-masked neighbour fields (forward, backward) per direction with bonds."""
        return {
            dim: (fwd * _shift(m, dim, 1), bwd * _shift(m, dim, -1))
            for dim, (fwd, bwd) in self._bonds.items()
        }

    # --- fields [A/m], each (B, 3, nz, ny, nx) ---------------------------------------------

    def _add_exchange(self, h: torch.Tensor, m: torch.Tensor, nb) -> torch.Tensor:
        for dim, (fwd, bwd) in nb.items():
            h += self._ex_coef[dim] * (fwd + bwd - self._n_bonds[dim] * m)
        return h

    def _add_dmi(self, h: torch.Tensor, nb) -> torch.Tensor:
        for dim, comp in ((-1, 0), (-2, 1)):  # x bonds pair (mx, mz), y bonds pair (my, mz)
            if dim in self._dmi_coef:
                fwd, bwd = nb[dim]
                diff = self._dmi_coef[dim] * (fwd - bwd)
                h[:, comp] += diff[:, 2]
                h[:, 2] -= diff[:, comp]
        return h

    def exchange_field(self, m: torch.Tensor, nb=None) -> torch.Tensor:
        nb = self._neighbours(m) if nb is None else nb
        return self._add_exchange(torch.zeros_like(m), m, nb)

    def dmi_field(self, m: torch.Tensor, nb=None) -> torch.Tensor:
        nb = self._neighbours(m) if nb is None else nb
        return self._add_dmi(torch.zeros_like(m), nb)

    def anisotropy_field(self, m: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(m)
        h[:, 2:3] = self._anis_coef * m[:, 2:3]
        return h

    def zeeman_field(self, m: torch.Tensor) -> torch.Tensor:
        return self.film.H.view(-1, 3, 1, 1, 1).to(m.dtype) * self._mask.expand_as(m)

    def demag_field(self, m: torch.Tensor) -> torch.Tensor:
        if self._kernel is None:
            return torch.zeros_like(m)
        return (
            demag_field(m * self.film.Ms.unsqueeze(1), self._kernel, self.film.periodic)
            * self._mask
        )

    def fields(self, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Effective field of every term (see :data:`TERMS`), each (B, 3, nz, ny, nx) [A/m]."""
        nb = self._neighbours(m)
        return {
            "exchange": self.exchange_field(m, nb),
            "dmi": self.dmi_field(m, nb),
            "anisotropy": self.anisotropy_field(m),
            "zeeman": self.zeeman_field(m),
            "demag": self.demag_field(m),
        }

    def effective_field(self, m: torch.Tensor) -> torch.Tensor:
        """Total effective field H_eff, (B, 3, nz, ny, nx) [A/m].

        Equal to the sum of :meth:`fields` but accumulated in place: this is the minimiser's
        inner loop, and on the CPU it is bound by memory traffic.
        """
        h = self.demag_field(m) if self._kernel is not None else torch.zeros_like(m)
        h += self.film.H.view(-1, 3, 1, 1, 1).to(m.dtype) * self._mask
        h[:, 2:3] += self._anis_coef * m[:, 2:3]
        nb = self._neighbours(m)
        self._add_exchange(h, m, nb)
        return self._add_dmi(h, nb)

    # --- energies [J], each (B,) -------------------------------------------------------------

    def energies(self, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Energy of every term per batch member, (B,) [J].

        Quadratic terms give E = −(μ0/2) Σ V Ms m·H_term, the Zeeman term E = −μ0 Σ V Ms m·H.
        """
        weight = MU0 * self.film.cell_volume.view(-1, 1, 1, 1, 1) * self.film.Ms.unsqueeze(1)
        out = {}
        for name, h in self.fields(m).items():
            factor = 1.0 if name == "zeeman" else 0.5
            out[name] = -factor * cell_sum(weight * m * h, 4)
        return out

    def total_energy(self, m: torch.Tensor) -> torch.Tensor:
        """Total energy per batch member, (B,) [J]."""
        return sum(self.energies(m).values())  # type: ignore[return-value]
