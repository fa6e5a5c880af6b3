"""Data loading for the run layer: data roots, text, images, MNIST."""
