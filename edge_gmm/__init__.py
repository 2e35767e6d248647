"""edge-gmm: multi-sensor generalist multimodal models for the edge."""

__version__ = "0.1.0"
