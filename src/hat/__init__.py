"""hat: HAT (Bin et al., ACM MM 2023) image-text retrieval as a configurable experiment suite.

``hat.load(PATH)`` gives a trained model ready to encode, score and explain (see :mod:`hat.retriever`).
"""

__version__ = "0.1.0"


def load(path, device: str = "auto", precision: str = "auto", architecture=None, kernel: str = "auto"):
    """:func:`hat.retriever.load`, imported on first use so that ``import hat`` stays light."""
    from hat.retriever import load as load_retriever

    return load_retriever(path, device=device, precision=precision, architecture=architecture, kernel=kernel)
