"""Triton kernels of fastwnll, shipped as ``fastwnll.kernels``.

Every kernel here has a plain-PyTorch counterpart in the ``fastwnll`` package that CPU tensors use;
importing this package requires triton.
"""
