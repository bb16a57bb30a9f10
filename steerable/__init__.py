"""Implicit steerable convolutions: G-steerable kernels produced by G-equivariant MLPs."""

__version__ = "0.1.0"
