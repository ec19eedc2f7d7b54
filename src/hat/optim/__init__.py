"""Optimisation: the parameter groups with their rate scales, the optimizer, the learning-rate schedule."""
