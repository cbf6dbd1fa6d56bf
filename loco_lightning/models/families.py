"""Model families as data: every architecture fact the rest of the code needs, in one registry.

A family names its pipeline class, its denoiser (a UNet or a diffusion transformer), its text
encoders, how its conditional inputs are built and the full-size denoiser config (used to count
sites without weights). Code asks the registry; it never
branches on model names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

GlobalTextPath = Literal["text_embeds", "add_embedding", "pooled_projections"]


@dataclass(frozen=True)
class Family:
    """Facts about one family of text-to-image models.

    Attributes:
        name: registry key.
        pipeline: diffusers pipeline class name (what ``model_index.json`` names).
        default_source: hub id loaded when none is given.
        n_sites: cross-attention sites in the full-size model, in execution order.
        site_kind: ``attn2`` (``to_k``, ``to_v``), ``added_kv`` (IF's ``add_k_proj``...) or
            ``joint`` (SD3, FLUX's double-stream blocks: the text stream's
            ``add_k_proj``/``add_v_proj`` in joint attention); FLUX's single-stream blocks are
            ``fused`` (text and image tokens in one sequence through the same ``to_k``/``to_v``).
        denoiser: the pipeline component text enters: ``unet`` or ``transformer`` (PixArt).
        denoiser_class: its diffusers class, which ``denoiser_config`` configures.
        text_encoders: pipeline component names of the text encoders, in context order.
        encoding: how prompts become UNet inputs: ``clip`` (one CLIP encoder's last hidden state),
            ``sdxl`` (two encoders' penultimate states concatenated, pooled ``text_embeds`` and
            ``time_ids``), ``t5`` (T5 states, projected inside the UNet by ``encoder_hid_proj``)
            or ``t5_masked`` (PixArt: T5 states and their padding mask, ``max_tokens`` long) or
            ``gemma`` (SANA: Gemma-2 states of the prompt after the pipeline's instruction, and
            their padding mask; the empty prompt of guidance without the instruction) or ``sd3``
            (CLIP-L ‖ CLIP-G penultimate states, zero-padded to T5's width, then T5's states
            along the sequence; pooled CLIP-L ‖ CLIP-G as ``pooled_projections``) or ``flux``
            (T5's states as the sequence, CLIP-L's pooled embedding as ``pooled_projections``).
        context_dim: width of ``encoder_hidden_states`` given to the UNet.
        pooled: where a prompt also enters the UNet outside cross-attention, if anywhere:
            ``text_embeds`` (SD-XL ``added_cond_kwargs``), ``add_embedding`` (IF's text-time
            embedding) or ``pooled_projections`` (SD3). K/V interventions leave it alone unless
            asked.
        resolution: default image side in pixels.
        space: ``latent`` (VAE; scale read from ``vae.config.scaling_factor``) or ``pixel``.
        scheduler: the pipeline's own scheduler class; ``scheduler_config`` its settings (used when
            a pipeline is built here; a loaded pipeline keeps its own).
        guidance: default classifier-free guidance scale (with ``guidance_embedded``: the scale
            the distilled denoiser is told, without an unconditional batch).
        guidance_embedded: the denoiser takes the guidance scale as an input (FLUX.1-dev)
            instead of running an unconditional branch.
        steps: default denoising steps.
        max_tokens: tokenizer limit of the text encoder(s).
        context_tokenizer: the tokenizer whose tokens are the rows of the denoiser's text
            context (FLUX: ``tokenizer_2``, T5's; its CLIP gives only the pooled embedding).
        context_length: rows of an encoded prompt, if not ``max_tokens`` (FLUX: T5's 512).
        context_t5: the T5 tokenizer whose rows follow the context tokenizer's, where a pipeline
            puts them side by side (SD3: ``tokenizer_3``, its rows after CLIP's 77).
        scorer: the CLIP that scores its images unless a job names another (the paper's).
        denoiser_config: the full-size denoiser config (diffusers ``UNet2DConditionModel``,
            ``PixArtTransformer2DModel`` or ``SanaTransformer2DModel``), for counting sites on the
            meta device.
        miniature: overrides that turn ``denoiser_config`` into a tiny random-weight test model
            with the same block types.
    """

    name: str
    pipeline: str
    default_source: str
    n_sites: int
    site_kind: Literal["attn2", "added_kv", "joint", "fused"]
    text_encoders: tuple[str, ...]
    encoding: Literal["clip", "sdxl", "t5", "t5_masked", "gemma", "sd3", "flux"]
    context_dim: int
    pooled: GlobalTextPath | None
    resolution: int
    space: Literal["latent", "pixel"]
    scheduler: str
    guidance: float
    steps: int
    max_tokens: int
    scorer: str = "openai/clip-vit-large-patch14"
    context_tokenizer: str = "tokenizer"
    context_length: int | None = None
    context_t5: str | None = None
    guidance_embedded: bool = False
    denoiser: Literal["unet", "transformer"] = "unet"
    denoiser_class: str = "UNet2DConditionModel"
    scheduler_config: dict = field(default_factory=dict, compare=False)
    denoiser_config: dict = field(default_factory=dict, compare=False)
    miniature: dict = field(default_factory=dict, compare=False)


_SD_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
_SD_SCHED = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "steps_offset": 1,
}
_SD_MINI = {
    "sample_size": 8,
    "block_out_channels": (8, 8, 16, 16),
    "norm_num_groups": 4,
    "attention_head_dim": 2,
}

_PIXART = {  # PixArt-α 1024 (PixArt-alpha/PixArt-XL-2-1024-MS)
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 28,
    "cross_attention_dim": 1152,
    "sample_size": 128,
    "patch_size": 2,
    "caption_channels": 4096,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
}
_PIXART_SCHED = {
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "lower_order_final": True,
    "timestep_spacing": "linspace",
}
_PIXART_MINI = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,
    "sample_size": 8,
    "caption_channels": 32,
}

_PIXART_ALPHA = Family(
    name="pixart",
    pipeline="PixArtAlphaPipeline",
    default_source="PixArt-alpha/PixArt-XL-2-1024-MS",
    n_sites=28,
    site_kind="attn2",
    denoiser="transformer",
    denoiser_class="PixArtTransformer2DModel",
    text_encoders=("text_encoder",),
    encoding="t5_masked",
    context_dim=4096,
    pooled=None,
    resolution=1024,
    space="latent",
    scheduler="DPMSolverMultistepScheduler",
    guidance=4.5,
    steps=20,
    max_tokens=120,
    scheduler_config=_PIXART_SCHED,
    denoiser_config=_PIXART,
    miniature=_PIXART_MINI,
)

_SANA = {  # SANA-1.6B 1024 (Efficient-Large-Model/Sana_1600M_1024px_diffusers)
    "in_channels": 32,
    "out_channels": 32,
    "num_attention_heads": 70,
    "attention_head_dim": 32,
    "num_layers": 20,
    "num_cross_attention_heads": 20,
    "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240,
    "caption_channels": 2304,
    "mlp_ratio": 2.5,
    "sample_size": 32,
    "patch_size": 1,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
}
_SANA_MINI = {  # SANA-1.5's normalised queries and keys, so the miniature runs that path too
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 8,
    "cross_attention_dim": 16,
    "caption_channels": 32,
    "sample_size": 8,
    "qk_norm": "rms_norm_across_heads",
}

_SD3 = {  # SD3-medium (stabilityai/stable-diffusion-3-medium-diffusers)
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
}
_SD3_MINI = {
    "sample_size": 8,
    "in_channels": 16,
    "out_channels": 16,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "caption_projection_dim": 16,
    "pooled_projection_dim": 24,
    "pos_embed_max_size": 8,
    "qk_norm": "rms_norm",  # SD3.5's
    "dual_attention_layers": (0, 1),  # SD3.5's image-only second attention: not a site
}

_FLUX = {  # FLUX.1-dev (black-forest-labs/FLUX.1-dev)
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
_FLUX_MINI = {
    "in_channels": 16,  # 4 latent channels, packed 2 x 2
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 16,
    "axes_dims_rope": (4, 6, 6),
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="sd1",
            pipeline="StableDiffusionPipeline",
            default_source="stable-diffusion-v1-5/stable-diffusion-v1-5",
            n_sites=16,
            site_kind="attn2",
            text_encoders=("text_encoder",),
            encoding="clip",
            context_dim=768,
            pooled=None,
            resolution=512,
            space="latent",
            scheduler="PNDMScheduler",
            guidance=7.5,
            steps=50,
            max_tokens=77,
            scheduler_config={**_SD_SCHED, "skip_prk_steps": True},
            denoiser_config=_SD_UNET,
            miniature={**_SD_MINI, "cross_attention_dim": 32},
        ),
        Family(
            name="sd2",
            pipeline="StableDiffusionPipeline",
            default_source="stabilityai/stable-diffusion-2-1",
            n_sites=16,
            site_kind="attn2",
            text_encoders=("text_encoder",),
            encoding="clip",
            context_dim=1024,
            pooled=None,
            resolution=768,
            space="latent",
            scheduler="DDIMScheduler",
            guidance=7.5,
            steps=50,
            max_tokens=77,
            scheduler_config={
                **_SD_SCHED,
                "clip_sample": False,
                "set_alpha_to_one": False,
                "prediction_type": "v_prediction",
            },
            denoiser_config={
                **_SD_UNET,
                "sample_size": 96,
                "cross_attention_dim": 1024,
                "attention_head_dim": (5, 10, 20, 20),
                "use_linear_projection": True,
            },
            miniature={**_SD_MINI, "cross_attention_dim": 48, "attention_head_dim": (2, 2, 4, 4)},
        ),
        Family(
            name="sdxl",
            pipeline="StableDiffusionXLPipeline",
            default_source="stabilityai/stable-diffusion-xl-base-1.0",
            n_sites=70,
            site_kind="attn2",
            text_encoders=("text_encoder", "text_encoder_2"),
            encoding="sdxl",
            context_dim=2048,
            pooled="text_embeds",
            resolution=1024,
            space="latent",
            scheduler="EulerDiscreteScheduler",
            guidance=5.0,
            steps=50,
            max_tokens=77,
            scheduler_config={**_SD_SCHED, "timestep_spacing": "leading"},
            denoiser_config={
                "sample_size": 128,
                "in_channels": 4,
                "out_channels": 4,
                "layers_per_block": 2,
                "block_out_channels": (320, 640, 1280),
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "transformer_layers_per_block": (1, 2, 10),
                "attention_head_dim": (5, 10, 20),
                "cross_attention_dim": 2048,
                "use_linear_projection": True,
                "addition_embed_type": "text_time",
                "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816,
            },
            miniature={
                "sample_size": 8,
                "block_out_channels": (8, 16, 16),
                "norm_num_groups": 4,
                "attention_head_dim": (2, 2, 4),
                "cross_attention_dim": 96,
                "addition_time_embed_dim": 4,
                "projection_class_embeddings_input_dim": 64 + 6 * 4,
            },
        ),
        Family(
            name="if",
            pipeline="IFPipeline",
            default_source="DeepFloyd/IF-I-XL-v1.0",
            n_sites=22,
            site_kind="added_kv",
            text_encoders=("text_encoder",),
            encoding="t5",
            context_dim=4096,
            pooled="add_embedding",
            resolution=64,
            space="pixel",
            scheduler="DDPMScheduler",
            guidance=7.0,
            steps=100,
            max_tokens=77,
            scheduler_config={
                "beta_schedule": "squaredcos_cap_v2",
                "variance_type": "learned_range",
                "thresholding": True,
                "dynamic_thresholding_ratio": 0.95,
                "sample_max_value": 1.5,
            },
            denoiser_config={
                "sample_size": 64,
                "in_channels": 3,
                "out_channels": 6,
                "layers_per_block": 3,
                "block_out_channels": (320, 640, 960, 1280),
                "down_block_types": ("ResnetDownsampleBlock2D",)
                + ("SimpleCrossAttnDownBlock2D",) * 3,
                "up_block_types": ("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
                "attention_head_dim": 64,
                "cross_attention_dim": 1280,
                "encoder_hid_dim": 4096,
                "encoder_hid_dim_type": "text_proj",
                "addition_embed_type": "text",
                "addition_embed_type_num_heads": 64,
                "cross_attention_norm": "group_norm",
                "resnet_time_scale_shift": "scale_shift",
                "resnet_skip_time_act": True,
                "resnet_out_scale_factor": 1.414,
                "time_embedding_act_fn": "gelu",
                "only_cross_attention": False,
            },
            miniature={
                "sample_size": 16,
                "block_out_channels": (8, 8, 16, 16),
                "norm_num_groups": 4,
                "attention_head_dim": 4,
                "cross_attention_dim": 32,  # IF's cross-attention GroupNorm has 32 groups
                "encoder_hid_dim": 64,
                "addition_embed_type_num_heads": 2,
            },
        ),
        _PIXART_ALPHA,
        Family(
            name="sana",
            pipeline="SanaPipeline",
            default_source="Efficient-Large-Model/Sana_1600M_1024px_diffusers",
            n_sites=20,
            site_kind="attn2",
            denoiser="transformer",
            denoiser_class="SanaTransformer2DModel",
            text_encoders=("text_encoder",),
            encoding="gemma",
            context_dim=2304,
            pooled=None,
            resolution=1024,
            space="latent",
            scheduler="DPMSolverMultistepScheduler",
            guidance=4.5,
            steps=20,
            max_tokens=300,
            scheduler_config={  # flow matching through DPM-Solver++, as SANA ships it
                **_PIXART_SCHED,
                "prediction_type": "flow_prediction",
                "use_flow_sigmas": True,
                "flow_shift": 3.0,
                "final_sigmas_type": "zero",
            },
            denoiser_config=_SANA,
            miniature=_SANA_MINI,
        ),
        Family(
            name="sd3",
            pipeline="StableDiffusion3Pipeline",
            default_source="stabilityai/stable-diffusion-3-medium-diffusers",
            n_sites=24,
            site_kind="joint",
            denoiser="transformer",
            denoiser_class="SD3Transformer2DModel",
            text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
            encoding="sd3",
            context_t5="tokenizer_3",
            context_dim=4096,
            pooled="pooled_projections",
            resolution=1024,
            space="latent",
            scheduler="FlowMatchEulerDiscreteScheduler",
            guidance=7.0,
            steps=28,
            max_tokens=77,
            scheduler_config={"shift": 3.0},
            denoiser_config=_SD3,
            miniature=_SD3_MINI,
        ),
        Family(
            name="flux",
            pipeline="FluxPipeline",
            default_source="black-forest-labs/FLUX.1-dev",
            n_sites=19 + 38,
            site_kind="joint",
            denoiser="transformer",
            denoiser_class="FluxTransformer2DModel",
            text_encoders=("text_encoder", "text_encoder_2"),
            encoding="flux",
            context_dim=4096,
            pooled="pooled_projections",
            resolution=1024,
            space="latent",
            scheduler="FlowMatchEulerDiscreteScheduler",
            guidance=3.5,
            guidance_embedded=True,
            steps=28,
            max_tokens=77,
            context_tokenizer="tokenizer_2",
            context_length=512,
            scheduler_config={
                "shift": 3.0,
                "use_dynamic_shifting": True,
                "base_image_seq_len": 256,
                "max_image_seq_len": 4096,
                "base_shift": 0.5,
                "max_shift": 1.15,
            },
            denoiser_config=_FLUX,
            miniature=_FLUX_MINI,
        ),
        replace(  # PixArt-Σ: PixArt-α's blocks, 300 T5 tokens, no size conditioning
            _PIXART_ALPHA,
            name="pixart_sigma",
            pipeline="PixArtSigmaPipeline",
            default_source="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
            max_tokens=300,
            denoiser_config={
                **_PIXART,
                "interpolation_scale": 2,
                "use_additional_conditions": False,
            },
        ),
    )
}


def get_family(name: str) -> Family:
    """Look a family up by name, with the list of known names in the error."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"Unknown model family {name!r}; known families: {', '.join(FAMILIES)}. "
            "Any other diffusers UNet with cross-attention can still be used directly with "
            "loco_lightning.hooks."
        ) from None


def build_denoiser(family: Family, **overrides):
    """The family's denoiser from its full-size config and ``overrides`` (random weights; on the
    meta device under ``torch.device("meta")``, to count sites without memory). An override that
    is not a config key of the class is refused, naming it."""
    import inspect

    import diffusers

    cls = getattr(diffusers, family.denoiser_class)
    unknown = sorted(set(overrides) - set(inspect.signature(cls.__init__).parameters) - {"self"})
    if unknown:
        raise ValueError(
            f"denoiser overrides {unknown} are not {family.denoiser_class} config keys; use keys "
            "of its config.json, such as attention_head_dim or block_out_channels"
        )
    return cls(**{**family.denoiser_config, **overrides})


# Components a pipeline may declare that have no place in these models (safety checkers and the
# like): given as None, with the safety check turned off, wherever the class takes them.
_OPTIONAL = ("safety_checker", "feature_extractor", "watermarker", "image_encoder")


def build_pipeline(family: Family, **components):
    """The family's own diffusers pipeline class around the given components.

    Optional components the class declares (``safety_checker``, ``watermarker``, …) are None.
    """
    import inspect

    import diffusers

    cls = getattr(diffusers, family.pipeline)
    params = inspect.signature(cls.__init__).parameters
    extra = {k: None for k in _OPTIONAL if k in params and k not in components}
    if "requires_safety_checker" in params:
        extra["requires_safety_checker"] = False
    return cls(**components, **extra)
