"""Search your own images with a trained model: a feature cache, ranking in blocks, contact sheets."""
