"""Scheduler settings shared by every sampler (ours and the world pipeline's own)."""

from __future__ import annotations

import inspect


def step_options(scheduler) -> dict:
    """Options for ``scheduler.step`` that every sampler here uses.

    With a clipping scheduler, the noise is re-derived from the clipped x0 (GLIDE; DDPM's
    posterior does the same): otherwise guidance pushes the black background below -1, the clip
    removes that from x0, the stale noise keeps it, and the unconditional sample's shape leaks
    back.
    """
    config, params = scheduler.config, inspect.signature(scheduler.step).parameters
    clips = config.get("clip_sample") or config.get("thresholding")
    return (
        {"use_clipped_model_output": True} if clips and "use_clipped_model_output" in params else {}
    )


def predicts_flow(scheduler) -> bool:
    """Whether ``scheduler`` samples a flow-matching model (SANA, SD3, FLUX): the denoiser
    predicts a velocity between noise and image, not DDPM's noise."""
    config = scheduler.config
    flow_class = "FlowMatch" in type(scheduler).__name__
    return flow_class or config.get("prediction_type") == "flow_prediction"
