"""telefuser: generate videos with open video diffusion transformers from one command."""

__version__ = "0.1.0"
