"""Relativistic wavelength and interaction constant (physics.md §1)."""

import math

import pytest

from ltemfactory.errors import ConfigError
from ltemfactory.ltem.microscope import Microscope, electron_wavelength_m, interaction_constant


def _sig4(x: float) -> float:
    return float(f"{x:.4g}")


@pytest.mark.parametrize(("kv", "pm"), [(200, 2.5079), (300, 1.9687)])
def test_wavelength_matches_reference_values(kv, pm):
    assert _sig4(electron_wavelength_m(kv * 1e3) * 1e12) == pytest.approx(_sig4(pm), abs=0)
    assert electron_wavelength_m(kv * 1e3) == pytest.approx(pm * 1e-12, rel=5e-5)


def test_interaction_constant_at_200kV():
    assert _sig4(interaction_constant(200e3)) == pytest.approx(7.29e6, rel=2e-3)
    # σ = 2π m e λ / h² ≈ 0.00729 rad/(V nm)
    assert interaction_constant(200e3) * 1e-9 == pytest.approx(0.00729, rel=2e-3)


def test_interaction_constant_decreases_towards_its_relativistic_limit():
    # σ → 2π m0 c e ... decreases with voltage at TEM energies
    assert interaction_constant(80e3) > interaction_constant(200e3) > interaction_constant(300e3)


def test_nonrelativistic_limit_of_wavelength():
    v = 10.0  # 10 V: λ ≈ h / sqrt(2 m0 e V)
    lam_nr = 6.62607015e-34 / math.sqrt(2 * 9.1093837015e-31 * 1.602176634e-19 * v)
    assert electron_wavelength_m(v) == pytest.approx(lam_nr, rel=1e-8)


def test_microscope_properties_and_validation():
    mic = Microscope(voltage_V=300e3, defocus_m=-1e-3)
    assert mic.wavelength_m == electron_wavelength_m(300e3)
    assert mic.sigma_rad_per_V_m == interaction_constant(300e3)
    assert mic.with_defocus(2e-3).defocus_m == 2e-3
    assert mic.coherent().theta_c_rad == 0.0
    with pytest.raises(ConfigError, match="voltage_V"):
        Microscope(voltage_V=-1)
    with pytest.raises(ConfigError, match="theta_c_rad"):
        Microscope(theta_c_rad=-1e-5)
    with pytest.raises(ConfigError, match="aperture_rad"):
        Microscope(aperture_rad=0.0)
