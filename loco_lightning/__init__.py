"""loco-lightning: find where a text-to-image diffusion model keeps a concept, then edit it."""

__version__ = "0.1.0"
