"""Constants of the SCAN similarity, shared by the PyTorch path (:mod:`hat.alignment`) and the
Triton kernels (:mod:`hat.kernels.scan_triton`), so the two compute one definition (docs/model.md)."""

LEAKY_SLOPE = 0.1  # LeakyReLU's negative slope on the region-word scores
NORM_EPS = 1e-8  # added to norms before they divide
