"""hat: HAT (Bin et al., ACM MM 2023) image-text retrieval as a configurable experiment suite."""

__version__ = "0.1.0"
