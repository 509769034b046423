"""Sample tilt and the projection of a periodic voxel grid onto the image (physics.md §2).

Tilt convention (McCray et al., Phys. Rev. Applied 15, 044025 (2021)): the sample is rotated
by θ about x, then by γ about y; the beam runs along z. A sample point (x, y, z) (centred on
the middle of the grid and of the film) projects to the image point

    i = x cosγ + y sinγ sinθ + z sinγ cosθ,     j = y cosθ − z sinθ,

and a moment (mx, my, mz) to the in-plane components

    mx' = mx cosγ + my sinγ sinθ + mz sinγ cosθ,     my' = my cosθ − mz sinθ.

Projected lattice. A film that is periodic in-plane with periods (nx dx, ny dy) projects to a
periodic function with the sheared lattice a1 = (nx dx cosγ, 0), a2 = (ny dy sinγ sinθ,
ny dy cosθ). Its Fourier series lives on the reciprocal lattice K = A⁻ᵀ k_u with
A = L diag(dx, dy), L = [[cosγ, sinγ sinθ], [0, cosθ]] and k_u = 2π (p/nx, q/ny) the ordinary
DFT wavenumbers in index units. On this *projected grid* (sample column (col, row) of the
mid-plane ↦ its projection) every z-slice of the voxel grid is just the mid-plane slice shifted
by o(z) = (z sinγ cosθ, −z sinθ), which is what makes the per-slice FFT + Fourier shift of
:mod:`ltemfactory.ltem.phase` exact and alias-free (PyLorentz instead sums point voxels at
off-grid positions on the lab DFT grid, which aliases).

Lab frame. Images are returned on the lab grid: the same (ny, nx) pixels of size (dy, dx),
centred on the rotation centre; pixel (row, col) sits at x = (col − (nx−1)/2) dx,
y = (row − (ny−1)/2) dy. The projected-grid fields are band-limited trigonometric polynomials,
so :meth:`ProjectionGeometry.to_lab` evaluates them exactly at the lab pixels (separable
periodic-sinc interpolation; Nyquist terms split symmetrically). The lab window therefore shows
slightly more than one projected period (1/cosθ in y), seamlessly, as a window onto the
infinite tilted film. Use :meth:`ProjectionGeometry.sample_to_image` to carry sample-frame maps
(labels, mz) into the same image frame (foreshortening included).

Tilt about an arbitrary in-plane axis: :meth:`Tilt.about_axis` converts a rotation by α about
the in-plane axis at azimuth β (angle of the axis from +x toward +y) into the (θ, γ) pair that
gives the same beam direction in the sample frame, hence the same projected phase up to an
in-plane rotation of the image about the beam by the small angle returned by
:func:`residual_image_rotation_rad` (second order in α), which is not applied: images are always
in the frame where the sample x axis projects onto the image x axis.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ltemfactory.errors import ConfigError, InputError

__all__ = [
    "ProjectionGeometry",
    "Tilt",
    "periodic_sinc_matrix",
    "residual_image_rotation_rad",
]


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_axis(axis: np.ndarray, a: float) -> np.ndarray:
    """Rodrigues rotation matrix for a unit axis and angle a [rad] (right-hand rule)."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * (kx @ kx)


@dataclass(frozen=True)
class Tilt:
    """Sample tilt: rotation by ``tilt_x_deg`` (θ) about x, then ``tilt_y_deg`` (γ) about y [deg].

    Both in (−90°, 90°). The default is no tilt.
    """

    tilt_x_deg: float = 0.0
    tilt_y_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("tilt_x_deg", "tilt_y_deg"):
            v = getattr(self, name)
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: expected an angle in degrees, got {v!r}") from None
            if not math.isfinite(f) or abs(f) >= 90.0:
                raise ConfigError(f"{name}: expected an angle in (-90, 90) degrees, got {v!r}")
            object.__setattr__(self, name, f)

    @classmethod
    def about_axis(cls, alpha_deg: float, azimuth_deg: float) -> Tilt:
        """Equivalent (θ, γ) of a rotation by α about the in-plane axis (cos β, sin β, 0) [deg].

        Matches the beam direction in the sample frame: R_n(α)ᵀ ẑ = (−sinα sinβ, sinα cosβ, cosα)
        equals (R_y(γ) R_x(θ))ᵀ ẑ = (−sinγ, sinθ cosγ, cosθ cosγ), so γ = asin(sinα sinβ) and
        θ = atan2(sinα cosβ, cosα). Then R_n(α) = R_z(ψ) R_y(γ) R_x(θ): the two tilts differ only
        by an in-plane rotation ψ of the image about the beam (:func:`residual_image_rotation_rad`).
        """
        a, b = math.radians(float(alpha_deg)), math.radians(float(azimuth_deg))
        gamma = math.asin(max(-1.0, min(1.0, math.sin(a) * math.sin(b))))
        theta = math.atan2(math.sin(a) * math.cos(b), math.cos(a))
        return cls(math.degrees(theta), math.degrees(gamma))

    @property
    def theta_rad(self) -> float:
        """θ, the rotation about x [rad]."""
        return math.radians(self.tilt_x_deg)

    @property
    def gamma_rad(self) -> float:
        """γ, the rotation about y [rad]."""
        return math.radians(self.tilt_y_deg)

    @property
    def is_zero(self) -> bool:
        return self.tilt_x_deg == 0.0 and self.tilt_y_deg == 0.0

    def rotation_matrix(self) -> np.ndarray:
        """R = R_y(γ) R_x(θ) (3×3, float64): sample-frame vectors to lab-frame vectors."""
        return _rot_y(self.gamma_rad) @ _rot_x(self.theta_rad)

    def beam_direction_in_sample(self) -> np.ndarray:
        """Unit beam direction (lab +z) expressed in the sample frame: Rᵀ ẑ."""
        return self.rotation_matrix().T @ np.array([0.0, 0.0, 1.0])


def residual_image_rotation_rad(alpha_deg: float, azimuth_deg: float) -> float:
    """In-plane image rotation ψ [rad] with R_n(α) = R_z(ψ) R_y(γ) R_x(θ) for Tilt.about_axis.

    The (θ, γ) tilt from :meth:`Tilt.about_axis` reproduces the projection of R_n(α) up to this
    rotation of the image about the beam, which ltemfactory does not apply.
    """
    a, b = math.radians(float(alpha_deg)), math.radians(float(azimuth_deg))
    rn = _rot_axis(np.array([math.cos(b), math.sin(b), 0.0]), a)
    rz = rn @ Tilt.about_axis(alpha_deg, azimuth_deg).rotation_matrix().T
    return math.atan2(rz[1, 0], rz[0, 0])


def _centred_frequencies(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequencies of the symmetric band and their weights (Nyquist split in halves)."""
    if n % 2 == 0:
        p = np.arange(-n // 2, n // 2 + 1)
        w = np.ones(n + 1)
        w[0] = w[-1] = 0.5
    else:
        p = np.arange(-(n - 1) // 2, (n - 1) // 2 + 1)
        w = np.ones(n)
    return p, w


def periodic_sinc_matrix(positions: np.ndarray, n: int) -> np.ndarray:
    """Real matrix M (len(positions) × n) evaluating an n-periodic trigonometric polynomial.

    ``(M @ f)[o] = f(positions[o])`` exactly for the band-limited interpolant of samples f[0..n)
    (Nyquist term split symmetrically, so real data give real values). Kernel:
    D(d) = sin(πd) / (n tan(πd/n)) for even n, sin(πd) / (n sin(πd/n)) for odd n.
    """
    d = np.asarray(positions, dtype=np.float64)[:, None] - np.arange(n)[None, :]
    d = d - n * np.round(d / n)  # wrap into [-n/2, n/2]
    small = np.abs(d) < 1e-12
    ds = np.where(small, 1.0, d)
    num = np.sin(np.pi * ds)
    den = n * (np.tan(np.pi * ds / n) if n % 2 == 0 else np.sin(np.pi * ds / n))
    out = num / den
    return np.where(small, 1.0, out)


@functools.lru_cache(maxsize=64)
def _cached_geometry(shape: tuple[int, int, int], cell: tuple[float, float, float], tilt: Tilt):
    return ProjectionGeometry(shape, cell, tilt)


class ProjectionGeometry:
    """Projection of an (nz, ny, nx) voxel grid of cell size (dx, dy, dz) [m] under a :class:`Tilt`.

    See the module docstring for the projected grid and the lab frame. Everything is computed in
    float64 on the CPU once and moved/cast on demand (cached per device and dtype).
    """

    def __init__(
        self,
        shape_zyx: tuple[int, int, int],
        cell_size_m: tuple[float, float, float],
        tilt: Tilt | None = None,
    ) -> None:
        if len(shape_zyx) != 3 or any(int(s) < 1 for s in shape_zyx):
            raise InputError(f"grid shape: expected (nz, ny, nx) positive, got {shape_zyx!r}")
        cell = tuple(float(c) for c in cell_size_m)
        if len(cell) != 3 or any(not math.isfinite(c) or c <= 0 for c in cell):
            raise ConfigError(
                f"cell_size_m: expected three positive sizes (dx, dy, dz) [m], got {cell_size_m!r}"
            )
        self.shape = tuple(int(s) for s in shape_zyx)
        self.nz, self.ny, self.nx = self.shape
        self.dx, self.dy, self.dz = cell
        self.tilt = tilt if tilt is not None else Tilt()
        th, ga = self.tilt.theta_rad, self.tilt.gamma_rad
        self.cos_t, self.sin_t = math.cos(th), math.sin(th)
        self.cos_g, self.sin_g = math.cos(ga), math.sin(ga)
        # In-plane part of the projection and its determinant (projected pixel area / dx dy).
        self.L = np.array([[self.cos_g, self.sin_g * self.sin_t], [0.0, self.cos_t]])
        self.area_factor = self.cos_g * self.cos_t
        z = (np.arange(self.nz) - (self.nz - 1) / 2.0) * self.dz
        self.slice_z_m = z
        # Projected offset (i, j) [m] of each z-slice relative to the mid-plane.
        self.slice_offsets_m = np.stack([z * self.sin_g * self.cos_t, -z * self.sin_t], axis=1)
        # Lab pixel -> projected-grid index coordinates (mid-plane), u = M (r - c) + c.
        self.shear = (self.dy / self.dx) * self.sin_g * self.sin_t / (self.cos_g * self.cos_t)
        self._cache: dict = {}

    @classmethod
    def cached(
        cls,
        shape_zyx: tuple[int, int, int],
        cell_size_m: tuple[float, float, float],
        tilt: Tilt | None = None,
    ) -> ProjectionGeometry:
        """A shared instance for this grid and tilt (its device tensors are cached too)."""
        return _cached_geometry(
            tuple(int(s) for s in shape_zyx),
            tuple(float(c) for c in cell_size_m),
            tilt if tilt is not None else Tilt(),
        )

    # ------------------------------------------------------------------ reciprocal lattice
    @property
    def is_identity(self) -> bool:
        """True at zero tilt: projected grid = lab grid."""
        return self.tilt.is_zero

    def index_wavenumbers(self, half: bool) -> tuple[np.ndarray, np.ndarray]:
        """DFT wavenumbers k_u = 2π (p/nx, q/ny) [rad/index] as (ny, nxk) float64 arrays.

        ``half`` selects the rfft layout (nxk = nx//2 + 1), else the full fft layout.
        """
        p = np.fft.rfftfreq(self.nx) if half else np.fft.fftfreq(self.nx)
        q = np.fft.fftfreq(self.ny)
        kux = np.broadcast_to(2 * np.pi * p[None, :], (self.ny, p.size))
        kuy = np.broadcast_to(2 * np.pi * q[:, None], (self.ny, p.size))
        return kux, kuy

    def wavevectors_np(self, half: bool) -> tuple[np.ndarray, np.ndarray]:
        """Physical wave vectors (Kx, Ky) [rad/m] of the projected reciprocal lattice, float64.

        K = A⁻ᵀ k_u: Kx = k_ux / (dx cosγ), Ky = k_uy / (dy cosθ) − tanγ tanθ k_ux / dx.
        """
        kux, kuy = self.index_wavenumbers(half)
        kx = kux / (self.dx * self.cos_g)
        ky = (
            kuy / (self.dy * self.cos_t)
            - (self.sin_g * self.sin_t / (self.cos_g * self.cos_t)) * kux / self.dx
        )
        return kx, ky

    def nyquist_mask_np(self, half: bool) -> np.ndarray:
        """Boolean (ny, nxk) mask, False on the Nyquist row/column of even-sized axes."""
        kux, kuy = self.index_wavenumbers(half)
        keep = np.ones(kux.shape, dtype=bool)
        if self.nx % 2 == 0:
            keep &= ~np.isclose(np.abs(kux), np.pi)
        if self.ny % 2 == 0:
            keep &= ~np.isclose(np.abs(kuy), np.pi)
        return keep

    def beam_kz_np(self, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        """Sample-frame z component of the rotated wave vector Rᵀ(Kx, Ky, 0) [rad/m].

        k'_z = cosθ sinγ Kx − sinθ Ky; sinc(k'_z dz / 2) is the form factor of a voxel's
        projected thickness (projection-slice theorem for a box of height dz).
        """
        return self.cos_t * self.sin_g * kx - self.sin_t * ky

    def thickness_form_factor_np(self, half: bool, in_plane_box: bool = False) -> np.ndarray:
        """Voxel form factor on the projected reciprocal lattice (float64, (ny, nxk)).

        sinc(k'_z dz/2); with ``in_plane_box`` also sinc(π p/nx) sinc(π q/ny), the tilt-independent
        in-plane part of a uniformly magnetised box (k'_x dx = 2πp/nx, k'_y dy = 2πq/ny).
        """
        kx, ky = self.wavevectors_np(half)
        ff = np.sinc(self.beam_kz_np(kx, ky) * self.dz / (2 * np.pi))
        if in_plane_box:
            kux, kuy = self.index_wavenumbers(half)
            ff = ff * np.sinc(kux / (2 * np.pi)) * np.sinc(kuy / (2 * np.pi))
        return ff

    def slice_shift_np(self, half: bool) -> np.ndarray:
        """exp(−i K·o(z_l)) for every slice, complex128 (nz, ny, nxk)."""
        kx, ky = self.wavevectors_np(half)
        o = self.slice_offsets_m
        arg = kx[None] * o[:, 0, None, None] + ky[None] * o[:, 1, None, None]
        return np.exp(-1j * arg)

    def tensor(
        self, key: str, device: torch.device | str, dtype: torch.dtype, builder
    ) -> torch.Tensor:
        """Cache helper: ``builder()`` (numpy) converted to (device, dtype) once."""
        dev = torch.device(device)
        k = (key, str(dev), dtype)
        t = self._cache.get(k)
        if t is None:
            t = torch.as_tensor(np.ascontiguousarray(builder()), dtype=dtype, device=dev)
            self._cache[k] = t
        return t

    # ------------------------------------------------------------------ lab-frame resampling
    def _lab_to_index_np(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projected-grid row positions u_r(row), column positions u_c(row, col) of lab pixels."""
        cy, cx = (self.ny - 1) / 2.0, (self.nx - 1) / 2.0
        r = np.arange(self.ny, dtype=np.float64)
        c = np.arange(self.nx, dtype=np.float64)
        ur = (r - cy) / self.cos_t + cy
        uc0 = (c - cx) / self.cos_g + cx  # at row = cy
        row_shift = -self.shear * (r - cy)  # added to uc for each lab row
        return ur, uc0, row_shift

    def _row_matrix_np(self) -> np.ndarray | None:
        if self.sin_t == 0.0:
            return None
        ur, _, _ = self._lab_to_index_np()
        return periodic_sinc_matrix(ur, self.ny)

    def _col_operators_np(self):
        _, uc0, row_shift = self._lab_to_index_np()
        if self.shear == 0.0:
            if self.sin_g == 0.0:
                return None
            return ("matrix", periodic_sinc_matrix(uc0, self.nx))
        p, w = _centred_frequencies(self.nx)
        # evaluation matrix E[p, c] = w_p exp(2πi p uc0[c] / nx) / nx
        e = (w[:, None] / self.nx) * np.exp(2j * np.pi * p[:, None] * uc0[None, :] / self.nx)
        ramp = np.exp(2j * np.pi * p[None, :] * row_shift[:, None] / self.nx)  # (ny, P)
        return ("spectral", e, ramp, np.mod(p, self.nx))

    def to_lab(self, field: torch.Tensor) -> torch.Tensor:
        """Evaluate projected-grid field(s) (..., ny, nx), real or complex, at the lab pixels.

        Exact for band-limited fields (periodic-sinc interpolation, separable: rows first, then
        columns with the shear as a per-row Fourier shift). Identity at zero tilt.
        """
        if self.is_identity:
            return field
        ny, nx = field.shape[-2:]
        if (ny, nx) != (self.ny, self.nx):
            raise InputError(
                f"field: expected (..., {self.ny}, {self.nx}), got {tuple(field.shape)}"
            )
        real_dtype = field.real.dtype if field.is_complex() else field.dtype
        dev = field.device
        out = field
        if self.sin_t != 0.0:
            m = self.tensor("row_matrix", dev, real_dtype, self._row_matrix_np)
            out = _apply_real_matrix_rows(m, out)
        if self.shear == 0.0:
            if self.sin_g == 0.0:
                return out
            m = self.tensor("col_matrix", dev, real_dtype, lambda: self._col_operators_np()[1].T)
            return _apply_real_matrix_cols(m, out)
        cdtype = torch.complex128 if real_dtype == torch.float64 else torch.complex64
        et = self.tensor("col_eval", dev, cdtype, lambda: self._col_operators_np()[1])
        rt = self.tensor("col_ramp", dev, cdtype, lambda: self._col_operators_np()[2])
        it = self.tensor("col_index", dev, torch.long, lambda: self._col_operators_np()[3])
        spec = torch.fft.fft(out, dim=-1).index_select(-1, it) * rt
        res = torch.matmul(spec, et)
        return res if field.is_complex() else res.real.contiguous()

    def lab_positions_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Projected-grid fractional indices (u_r, u_c) of all lab pixels, each (ny, nx) float64."""
        ur, uc0, row_shift = self._lab_to_index_np()
        uc = uc0[None, :] + row_shift[:, None]
        return np.broadcast_to(ur[:, None], uc.shape).copy(), uc

    def sample_to_image(self, field: torch.Tensor, order: int = 0) -> torch.Tensor:
        """Warp sample-frame map(s) (..., ny, nx) into the lab image frame (mid-plane projection).

        Periodic in the sample grid. ``order=0``: nearest neighbour (for label maps, keeps the
        dtype); ``order=1``: bilinear (for continuous fields such as mz). Identity at zero tilt.
        """
        if self.is_identity:
            return field
        ur, uc = self.lab_positions_index()
        dev = field.device
        if order == 0:
            r = torch.as_tensor(np.mod(np.round(ur), self.ny).astype(np.int64), device=dev)
            c = torch.as_tensor(np.mod(np.round(uc), self.nx).astype(np.int64), device=dev)
            return field[..., r, c]
        if order != 1:
            raise ConfigError(f"order: expected 0 or 1, got {order!r}")
        r0, c0 = np.floor(ur), np.floor(uc)
        fr = torch.as_tensor(ur - r0, dtype=field.dtype, device=dev)
        fc = torch.as_tensor(uc - c0, dtype=field.dtype, device=dev)
        r0i = torch.as_tensor(np.mod(r0, self.ny).astype(np.int64), device=dev)
        c0i = torch.as_tensor(np.mod(c0, self.nx).astype(np.int64), device=dev)
        r1i, c1i = (r0i + 1) % self.ny, (c0i + 1) % self.nx
        return (
            field[..., r0i, c0i] * (1 - fr) * (1 - fc)
            + field[..., r0i, c1i] * (1 - fr) * fc
            + field[..., r1i, c0i] * fr * (1 - fc)
            + field[..., r1i, c1i] * fr * fc
        )

    def project_points_m(self, x_m, y_m, z_m=0.0) -> tuple[np.ndarray, np.ndarray]:
        """Lab-frame image coordinates (i, j) [m] of sample points (x, y, z) [m] (physics.md §2).

        Sample and image coordinates are both centred on the grid centre / mid-plane; add
        ((nx−1)/2 dx, (ny−1)/2 dy) for positions from the first pixel. The image is periodic
        with the projected lattice (see module docstring), so a point also appears at
        (i, j) + n a1 + m a2.
        """
        x, y, z = (np.asarray(v, dtype=np.float64) for v in (x_m, y_m, z_m))
        i = x * self.cos_g + y * self.sin_g * self.sin_t + z * self.sin_g * self.cos_t
        j = y * self.cos_t - z * self.sin_t
        return i, j

    def projected_lattice_m(self) -> np.ndarray:
        """Projected period vectors a1, a2 [m] as rows of a 2×2 array."""
        return np.array(
            [
                [self.nx * self.dx * self.cos_g, 0.0],
                [self.ny * self.dy * self.sin_g * self.sin_t, self.ny * self.dy * self.cos_t],
            ]
        )


def _apply_real_matrix_rows(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """m (ny_out, ny) applied along axis −2 of x (..., ny, nx), x real or complex."""
    if x.is_complex():
        xr = torch.view_as_real(x.resolve_conj())  # (..., ny, nx, 2)
        shp = xr.shape
        y = torch.matmul(m, xr.reshape(*shp[:-2], shp[-2] * 2))
        return torch.view_as_complex(y.reshape(*shp[:-3], m.shape[0], shp[-2], 2).contiguous())
    return torch.matmul(m, x)


def _apply_real_matrix_cols(mt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mt (nx, nx_out) applied along the last axis of x (..., ny, nx)."""
    if x.is_complex():
        return torch.complex(torch.matmul(x.real, mt), torch.matmul(x.imag, mt))
    return torch.matmul(x, mt)
