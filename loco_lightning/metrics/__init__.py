"""Metrics as torchmetrics ``Metric``s with injectable backbones (CLIP score, FID, readers)."""
