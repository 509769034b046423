import numpy as np
import pytest
import torch

from ltemfactory.micromagnetics.film import Film, field_from_mT

F64 = torch.float64


def make_film(
    shape=(1, 16, 16),
    batch=1,
    Ms=5e5,
    A=1e-11,
    D=0.0,
    Ku=0.0,
    field_mT=(0.0, 0.0, 0.0),
    cell=(2e-9, 2e-9, 2e-9),
    periodic=True,
    demag=False,
) -> Film:
    """A float64 test film with uniform parameters (broadcast over the batch)."""
    ms = torch.as_tensor(Ms, dtype=F64)
    if ms.ndim == 0:
        ms = torch.full((batch, *shape), float(ms), dtype=F64)

    def per(v):
        return torch.full((batch,), float(v), dtype=F64)

    h = field_from_mT(torch.tensor([field_mT] * batch, dtype=F64))
    return Film(
        Ms=ms,
        A=per(A),
        D=per(D),
        Ku=per(Ku),
        H=h,
        cell=torch.tensor([cell] * batch, dtype=F64),
        periodic=periodic,
        demag=demag,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_unit(shape, gen: torch.Generator | None = None) -> torch.Tensor:
    m = torch.randn(*shape, dtype=F64, generator=gen)
    return m / torch.linalg.vector_norm(m, dim=1, keepdim=True)
