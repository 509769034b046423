"""Electron-optical constants of the beam and the microscope parameter group (physics.md §1, §3).

Relativistic electron wavelength and interaction constant (e.g. Kirkland, *Advanced Computing
in Electron Microscopy*, 2nd ed., Springer 2010, ch. 2 and 5):

    λ = h / sqrt(2 m0 e V (1 + e V / (2 m0 c²)))                     [m]
    σ = 2π m e λ / h²,   m = m0 (1 + e V / (m0 c²))                  [rad / (V m)]

Sign convention of the defocus (binding for the whole package, physics.md §3-4): the phase
aberration is χ(q) = π λ Δf q² + ..., the transfer function T = exp(−iχ)·envelopes, i.e. a
defocus Δf propagates the exit wave a distance Δf downstream (paraxial Fresnel propagator
exp(−iπλΔf q²)). To first order I(Δf) ≈ I0 − (λ Δf I0 / 2π) ∇²φ, the sign used by the TIE
∇·(I∇φ) = −(2π/λ) ∂I/∂z. Both signs of Δf are allowed; contrast reverses with the sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ltemfactory.constants import C_LIGHT, E_CHARGE, H_PLANCK, M_ELECTRON
from ltemfactory.errors import ConfigError

__all__ = [
    "Microscope",
    "electron_wavelength_m",
    "interaction_constant",
    "relativistic_mass_kg",
]


def _check_voltage(voltage_V: float) -> float:
    v = float(voltage_V)
    if not math.isfinite(v) or v <= 0.0:
        raise ConfigError(
            f"voltage_V: expected a positive accelerating voltage [V], got {voltage_V!r}"
        )
    return v


def electron_wavelength_m(voltage_V: float) -> float:
    """Relativistic electron wavelength λ [m] for an accelerating voltage [V].

    λ = h / sqrt(2 m0 e V (1 + eV / (2 m0 c²))); λ(200 kV) = 2.5079 pm, λ(300 kV) = 1.9687 pm.
    """
    v = _check_voltage(voltage_V)
    ev = E_CHARGE * v
    return H_PLANCK / math.sqrt(
        2.0 * M_ELECTRON * ev * (1.0 + ev / (2.0 * M_ELECTRON * C_LIGHT**2))
    )


def relativistic_mass_kg(voltage_V: float) -> float:
    """Relativistic electron mass m = m0 (1 + eV / (m0 c²)) [kg]."""
    v = _check_voltage(voltage_V)
    return M_ELECTRON * (1.0 + E_CHARGE * v / (M_ELECTRON * C_LIGHT**2))


def interaction_constant(voltage_V: float) -> float:
    """Interaction constant σ = 2π m e λ / h² [rad / (V m)]; σ(200 kV) ≈ 7.29e6 rad/(V m)."""
    lam = electron_wavelength_m(voltage_V)
    return 2.0 * math.pi * relativistic_mass_kg(voltage_V) * E_CHARGE * lam / H_PLANCK**2


def _finite(name: str, value: float, *, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or (nonneg and v < 0.0):
        kind = "a finite non-negative number" if nonneg else "a finite number"
        raise ConfigError(f"{name}: expected {kind}, got {value!r}")
    return v


@dataclass(frozen=True)
class Microscope:
    """Imaging conditions of a (Lorentz) TEM. SI units, unit suffix in each field name.

    Attributes:
        voltage_V: accelerating voltage [V] (e.g. 200e3).
        defocus_m: defocus Δf [m], either sign (see the module docstring for the convention).
        cs_m: spherical aberration coefficient Cs [m] (Lorentz lenses: mm to m).
        astigmatism_m: two-fold astigmatism magnitude Ca [m]; χ gains π λ Ca q² cos 2(φ_q − φ_a).
        astigmatism_angle_rad: astigmatism azimuth φ_a [rad], from +x toward +y.
        theta_c_rad: beam divergence semi-angle θc [rad] (spatial-coherence envelope).
        defocus_spread_m: defocus spread Δ = Cc ΔE/E [m] (temporal-coherence envelope).
        aperture_rad: objective-aperture semi-angle [rad]; None = no aperture. Spatial
            frequencies with λ|q| > aperture_rad are cut.
    """

    voltage_V: float = 200e3
    defocus_m: float = 0.0
    cs_m: float = 0.0
    astigmatism_m: float = 0.0
    astigmatism_angle_rad: float = 0.0
    theta_c_rad: float = 0.0
    defocus_spread_m: float = 0.0
    aperture_rad: float | None = None

    def __post_init__(self) -> None:
        _check_voltage(self.voltage_V)
        _finite("defocus_m", self.defocus_m)
        _finite("cs_m", self.cs_m)
        _finite("astigmatism_m", self.astigmatism_m)
        _finite("astigmatism_angle_rad", self.astigmatism_angle_rad)
        _finite("theta_c_rad", self.theta_c_rad, nonneg=True)
        _finite("defocus_spread_m", self.defocus_spread_m, nonneg=True)
        if self.aperture_rad is not None and _finite("aperture_rad", self.aperture_rad) <= 0:
            raise ConfigError(
                f"aperture_rad: expected a positive semi-angle or None, got {self.aperture_rad!r}"
            )

    @property
    def wavelength_m(self) -> float:
        """Relativistic electron wavelength λ [m]."""
        return electron_wavelength_m(self.voltage_V)

    @property
    def sigma_rad_per_V_m(self) -> float:
        """Interaction constant σ [rad / (V m)]."""
        return interaction_constant(self.voltage_V)

    def with_defocus(self, defocus_m: float) -> Microscope:
        """A copy with another defocus Δf [m]."""
        return replace(self, defocus_m=float(defocus_m))

    def coherent(self) -> Microscope:
        """A copy with both partial-coherence envelopes switched off (θc = Δ = 0)."""
        return replace(self, theta_c_rad=0.0, defocus_spread_m=0.0)
