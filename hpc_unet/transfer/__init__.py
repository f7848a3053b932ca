"""Transfer learning: start runs from trained models (source resolution without TensorFlow)."""
