"""Sites, intervention specs and the executor that installs them."""

from loco_lightning.hooks.executor import intervene
from loco_lightning.hooks.interventions import Intervention, NeuronAblation, PromptSwap, Record
from loco_lightning.hooks.processors import Trace
from loco_lightning.hooks.sites import CrossAttnSite, site_inputs, site_module, sites

__all__ = [
    "CrossAttnSite",
    "Intervention",
    "NeuronAblation",
    "PromptSwap",
    "Record",
    "Trace",
    "intervene",
    "site_inputs",
    "site_module",
    "sites",
]
