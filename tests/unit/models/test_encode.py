"""Prompt encoding per family: the UNet's inputs, and refusals instead of silent truncation."""

from __future__ import annotations

import pytest

from tests.helpers import mini_model


def test_empty_prompt_list_is_refused(mini):
    with pytest.raises(ValueError, match="Empty prompt list"):
        mini.encode([])


def test_prompt_longer_than_the_tokenizer_limit_is_refused_by_name(mini):
    limit = mini.tokens.length  # 77 (CLIP, T5), SANA's 300
    long = "a " + "very " * (limit // 5) + "red circle"
    with pytest.raises(ValueError, match=rf"Prompt 'a very .* tokens long .* at most {limit}"):
        mini.encode(["a red circle", long])


@pytest.mark.parametrize("family", ["sd1", "sana"])
def test_token_positions_are_rows_of_the_encoded_context(family):
    """Causal text encoders (CLIP; SANA's Gemma after its instruction) give two prompts the same
    rows up to the first token where they differ: that row is where ``tokens`` puts the concept."""
    from loco_lightning.models.tokenizers import concept_positions

    model = mini_model(family)
    with_, without = "a red striped circle", "a red circle"
    rows = model.encode([with_, without]).context
    differ = (rows[0] - rows[1]).abs().amax(-1) > 1e-6
    assert int(differ.nonzero()[0]) == concept_positions(model.tokens, with_, without)[0]


def test_context_widths_match_the_denoiser(mini):
    cond = mini.encode(["a red circle", "a blue square"])
    config = mini.denoiser.config
    width = (  # what the denoiser's first layer that reads text takes
        config.get("encoder_hid_dim")
        or config.get("caption_channels")
        or config.get("joint_attention_dim")
        or config.cross_attention_dim
    )
    assert cond.context.shape[0] == 2 and cond.context.shape[-1] == width
    if mini.family.encoding in ("t5_masked", "gemma"):  # PixArt, SANA: padded, with the mask
        length = mini.tokens.length
        assert cond.mask.shape == (2, length) == cond.context.shape[:2]
        assert 0 < cond.mask[0].sum() < length


def test_sdxl_conditioning_concatenates_both_encoders_and_carries_pooled_and_time_ids():
    model = mini_model("sdxl")
    cond = model.encode(["a red circle", "a blue square"])
    te1 = model.pipeline.text_encoder.config.hidden_size
    te2 = model.pipeline.text_encoder_2.config.hidden_size
    assert cond.context.shape[-1] == te1 + te2 == model.denoiser.config.cross_attention_dim
    assert cond.added["text_embeds"].shape == (
        2,
        model.pipeline.text_encoder_2.config.projection_dim,
    )
    assert cond.added["time_ids"].shape == (2, 6)
    # Each prompt's pooled embedding is its own.
    assert (cond.added["text_embeds"][0] - cond.added["text_embeds"][1]).abs().max() > 1e-4


@pytest.mark.parametrize(("family", "first"), [("sd1", 7), ("flux", 6)])
def test_concept_positions_are_rows_of_the_tokenizer_that_makes_the_context(family, first):
    """FLUX's context is T5's sequence (its CLIP gives only the pooled embedding); T5 has no
    start token, so its rows hold the prompt one place earlier than CLIP's ('s' of "striped")."""
    from loco_lightning.models.tokenizers import concept_positions

    model = mini_model(family)
    assert concept_positions(model.tokens, "a red striped circle", "a red circle")[0] == first


def test_sd3_concept_positions_cover_clip_rows_then_t5_rows():
    """SD3's context is CLIP-L ‖ CLIP-G's rows, then T5's, which say the prompt again: each
    segment's concept rows are where the encoded prompts first differ within it (CLIP is causal,
    so its rows agree up to there; T5 without a start token holds the word one row earlier)."""
    from loco_lightning.models.tokenizers import concept_positions

    model = mini_model("sd3")
    clip, t5 = model.segments
    assert (clip.start, t5.start) == (0, clip.length)
    with_, without = "a red striped circle", "a red circle"
    rows = model.encode([with_, without]).context
    assert rows.shape[1] == clip.length + t5.length
    positions = concept_positions(model.segments, with_, without)
    assert positions[0] == 7 and t5.start + 6 in positions and max(positions) < rows.shape[1]
    differ = (rows[0, : t5.start] - rows[1, : t5.start]).abs().amax(-1) > 1e-6
    assert int(differ.nonzero()[0]) == positions[0]
    # without T5 the pipeline's zero rows say nothing: one segment
    from loco_lightning.models import load_model

    alone = load_model("sd3", "miniature")  # not the shared one: its T5 is taken away
    alone.pipeline.tokenizer_3 = alone.pipeline.text_encoder_3 = None
    assert len(alone.segments) == 1
