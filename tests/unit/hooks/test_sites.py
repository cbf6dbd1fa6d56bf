"""Sites are the denoiser's cross-attention layers in execution order, for every family."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from loco_lightning.hooks import sites
from loco_lightning.models import FAMILIES, get_family
from loco_lightning.models.families import build_denoiser

TRUE_COUNTS = {"sd1": 16, "sd2": 16, "sdxl": 70, "if": 22, "pixart": 28, "pixart_sigma": 28,
               "sana": 20, "sd3": 24, "flux": 19 + 38}  # fmt: skip
KINDS = {"flux": {"joint", "fused"}}  # FLUX: double-stream blocks, then single-stream ones


@pytest.mark.parametrize("name", list(TRUE_COUNTS))
def test_full_size_site_counts_on_meta_device(name):
    family = get_family(name)
    with torch.device("meta"):
        unet = build_denoiser(family)
    found = sites(unet)
    assert len(found) == family.n_sites == TRUE_COUNTS[name]
    assert [s.index for s in found] == list(range(len(found)))
    assert {s.kind for s in found} == KINDS.get(name, {family.site_kind})
    cfg = unet.config
    width = (  # what the sites' key projections read
        cfg.get("cross_attention_dim")
        or cfg.get("caption_projection_dim")
        or cfg.num_attention_heads * cfg.attention_head_dim
    )
    assert all(s.context_dim == width for s in found)


SD35 = {  # SD3.5's configs differ from SD3-medium's in these (same pipeline and family)
    "large": {"num_layers": 38, "num_attention_heads": 38, "caption_projection_dim": 2432,
              "qk_norm": "rms_norm"},
    "medium": {"dual_attention_layers": tuple(range(13)), "qk_norm": "rms_norm",
               "pos_embed_max_size": 384},
}  # fmt: skip


@pytest.mark.parametrize(("name", "count"), [("large", 38), ("medium", 24)])
def test_sd35_site_counts_on_meta_device(name, count):
    """SD3.5-medium's second, image-only attention in its first 13 blocks is not a site."""
    with torch.device("meta"):
        net = build_denoiser(get_family("sd3"), **SD35[name])
    found = sites(net)
    assert len(found) == count and {s.kind for s in found} == {"joint"}
    assert [s.path for s in found] == [f"transformer_blocks.{i}.attn" for i in range(count)]


def test_sd1_execution_order_puts_mid_block_between_down_and_up():
    with torch.device("meta"):
        unet = build_denoiser(get_family("sd1"))
    paths = [s.path for s in sites(unet)]
    # named_modules lists mid_block last; execution runs it after the 6 down sites.
    assert [p for p, _ in unet.named_modules()].index("mid_block") > [
        p for p, _ in unet.named_modules()
    ].index("up_blocks")
    assert paths[6].startswith("mid_block.")
    assert all(p.startswith("down_blocks.") for p in paths[:6])
    assert all(p.startswith("up_blocks.") for p in paths[7:])
    assert paths[8] == "up_blocks.1.attentions.1.transformer_blocks.0.attn2"  # PAPER.md


@pytest.mark.parametrize("name", list(FAMILIES))
def test_miniatures_keep_the_true_site_count(name):
    from tests.helpers import mini_model

    model = mini_model(name)
    assert len(sites(model.denoiser)) == get_family(name).n_sites


def test_if_sites_are_added_kv_with_bias():
    from tests.helpers import mini_model

    model = mini_model("if")
    for site in sites(model.denoiser):
        attn = model.denoiser.get_submodule(site.path)
        assert site.kind == "added_kv"
        assert attn.add_k_proj.bias is not None and attn.add_v_proj.bias is not None


def test_unet_without_cross_attention_is_refused_by_name():
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    )
    with pytest.raises(ValueError, match="UNet2DModel has no cross-attention layer"):
        sites(unet)
