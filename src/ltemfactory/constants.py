"""Physical constants in SI units (CODATA 2018 exact/recommended values, physics.md §1)."""

H_PLANCK = 6.62607015e-34
"""Planck constant h [J s]."""
HBAR = H_PLANCK / (2.0 * 3.141592653589793)
"""Reduced Planck constant ħ [J s]."""
E_CHARGE = 1.602176634e-19
"""Elementary charge e [C]."""
M_ELECTRON = 9.1093837015e-31
"""Electron rest mass m0 [kg]."""
C_LIGHT = 299792458.0
"""Speed of light c [m/s]."""
MU0 = 1.25663706212e-6
"""Vacuum permeability μ0 [N/A²]."""
PHI0 = H_PLANCK / E_CHARGE
"""Flux quantum of the electron phase, Φ0 = h/e [Wb = T m²] (not the superconducting h/2e)."""
