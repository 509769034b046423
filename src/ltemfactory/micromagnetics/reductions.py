"""Sums over grid cells whose floating-point result does not depend on the CPU thread count.

torch reduces a tensor to *one* number per output by splitting the summed elements between the
intra-op threads and adding the partial sums, so the summation order, and with it the last bits
of the result, follows ``torch.get_num_threads()``. A relaxation is chaotic in the last bit: a
demo batch whose last active member was summed this way took 301 iterations with 2 threads and
296 with 1 to reach the same tolerance, and the stored states differed. When a reduction has
many outputs, torch hands each thread whole outputs instead, and each output is summed by one
thread in one fixed order. :func:`cell_sum` therefore sums every grid row first (many outputs)
and then the row totals.
"""

from __future__ import annotations

import torch

__all__ = ["cell_sum"]


def cell_sum(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Sum of ``x`` over its last ``ndim`` dimensions (e.g. (B, 3, nz, ny, nx) with ``ndim=4``
    gives (B,)), bit-identical for any number of CPU threads.

    The last dimension (the grid's columns) is summed first; the row totals are then summed in
    a second pass, which is thread-independent too while it has more than one output (members)
    or fewer than 32,768 elements (torch's grain size, below which it runs serially): a single
    member must have fewer than 32,768 rows × components × layers.
    """
    if not 2 <= ndim <= x.ndim:
        raise ValueError(f"ndim: expected 2..{x.ndim} (a grid has rows and columns), got {ndim}")
    return x.sum(dim=-1).flatten(start_dim=-(ndim - 1)).sum(dim=-1)
