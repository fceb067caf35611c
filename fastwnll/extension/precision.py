"""Working dtypes and full-precision scopes for the WNLL numerics.

Half-precision inputs (float16, bfloat16) are computed in float32 and the results cast back to the
input dtype; the computations run outside any autocast region of the caller, and (with
:func:`full_precision`) without TF32 in CUDA matrix products, so that autocast or TF32 settings meant
for a network never change the graph or the weights.
"""

from __future__ import annotations

import contextlib

import torch

from fastwnll.extension import loader

HALF = (torch.float16, torch.bfloat16)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16, otherwise ``dtype`` itself."""
    return torch.float32 if dtype in HALF else dtype


@contextlib.contextmanager
def no_autocast(device: torch.device):
    """Autocast off for ``device``'s type inside the block (nothing to do where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


@contextlib.contextmanager
def full_precision(device: torch.device):
    """No autocast and, on this thread, no TF32 in cuBLAS matrix products inside the block; torch's
    global TF32 settings are left as they are."""
    with no_autocast(device), loader.load().NoTF32():
        yield
