"""Batched thin-film problem definition: B films relaxed together on one grid.

Every tensor carries the batch dimension first so that thousands of parameter sets can be
relaxed on one device at once. Arrays are (batch, [component,] layer, row, col); x runs along
columns, y along rows, z through the layers (out of the film).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ltemfactory.constants import MU0
from ltemfactory.micromagnetics.reductions import cell_sum


@dataclass(frozen=True)
class Film:
    """B thin films sharing one grid (nz, ny, nx) but with their own material and cell size.

    Attributes:
        Ms: saturation magnetisation per cell, (B, nz, ny, nx) [A/m]; 0 marks empty cells
            (holes, the outside of a disk), which carry no moment and break exchange/DMI bonds.
        A: exchange stiffness, (B,) [J/m].
        D: interfacial DMI constant, (B,) [J/m²]; sign convention in :mod:`.energy`.
        Ku: uniaxial (out-of-plane) anisotropy constant, (B,) [J/m³].
        H: applied field, (B, 3) [A/m] (H, not μ0H; see :func:`field_from_mT`).
        cell: cell size (dx, dy, dz), (B, 3) [m]; dz is the layer thickness.
        periodic: periodic in-plane boundaries (True) or open edges (False). Open edges carry the
            natural boundary condition of the discrete energy, which is the Rohart–Thiaville
            condition ∂m/∂n = (D/2A)(n̂ × ẑ) × m in the continuum limit (sign for the
            DMI convention of :mod:`.energy`).
        demag: include the demagnetising field.
    """

    Ms: torch.Tensor
    A: torch.Tensor
    D: torch.Tensor
    Ku: torch.Tensor
    H: torch.Tensor
    cell: torch.Tensor
    periodic: bool = True
    demag: bool = True

    def __post_init__(self) -> None:
        if self.Ms.ndim != 4:
            raise ValueError(f"Film.Ms: expected shape (B, nz, ny, nx), got {tuple(self.Ms.shape)}")
        b = self.Ms.shape[0]
        for name, shape in (
            ("A", (b,)),
            ("D", (b,)),
            ("Ku", (b,)),
            ("H", (b, 3)),
            ("cell", (b, 3)),
        ):
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Film.{name}: expected shape {shape}, got {got}")
        if bool((self.cell <= 0).any()):
            raise ValueError("Film.cell: cell sizes must be > 0 [m]")
        if bool((self.Ms < 0).any()):
            raise ValueError("Film.Ms: saturation magnetisation must be >= 0 [A/m]")

    @property
    def batch(self) -> int:
        return self.Ms.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (nz, ny, nx)."""
        return tuple(self.Ms.shape[1:])  # type: ignore[return-value]

    @property
    def magnetic(self) -> torch.Tensor:
        """Boolean mask of cells that carry a moment, (B, nz, ny, nx)."""
        return self.Ms > 0

    @property
    def cell_volume(self) -> torch.Tensor:
        """Cell volume, (B,) [m³]."""
        return self.cell.prod(dim=1)

    @property
    def Ms_ref(self) -> torch.Tensor:
        """Mean Ms over the magnetic cells, (B,) [A/m]: the scale of reduced fields and torques."""
        mag = self.magnetic
        return cell_sum(self.Ms * mag, 3) / mag.sum(dim=(1, 2, 3)).clamp(min=1)

    def select(self, index: torch.Tensor) -> Film:
        """The sub-batch of members ``index`` (a 1-D long tensor)."""
        return replace(
            self,
            Ms=self.Ms[index],
            A=self.A[index],
            D=self.D[index],
            Ku=self.Ku[index],
            H=self.H[index],
            cell=self.cell[index],
        )

    def with_field(self, H: torch.Tensor) -> Film:
        """The same films in another applied field, (B, 3) [A/m]."""
        return replace(self, H=H)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Film:
        return replace(
            self,
            **{
                k: getattr(self, k).to(device=device, dtype=dtype)
                for k in ("Ms", "A", "D", "Ku", "H", "cell")
            },
        )


def field_from_mT(b_mT: torch.Tensor) -> torch.Tensor:
    """Applied field H [A/m] from a flux density μ0H given in [mT]."""
    return b_mT * 1e-3 / MU0
