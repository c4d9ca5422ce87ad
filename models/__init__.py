"""PyTorch architectures of MoodLake, one module per family, behind ``get_model(name, **cfg)``."""
