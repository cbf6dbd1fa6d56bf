"""Captions: exact removal rules, dropout rates, and held-out templates kept out of training."""

import itertools

import numpy as np
import pytest

from loco_lightning.data.world import (
    ATTRIBUTES,
    Scene,
    caption_for,
    default_vocabulary,
    fact_target,
    sample_caption,
    sample_concept_scene,
)

VOCAB = default_vocabulary()
RED_STRIPED_CIRCLE = Scene("circle", "red", "striped")


def _template(text):
    return next(t for t in VOCAB.templates if t.text == text)


def test_removal_known_answers():
    plain = caption_for(RED_STRIPED_CIRCLE, _template("a {colour} {style} {shape}"))
    assert plain.text() == str(plain) == "a red striped circle"
    assert plain.removed("shape") == "a red striped shape"
    assert plain.removed("colour") == "a striped circle"
    assert plain.removed("style") == "a red circle"
    assert plain.text(drop=ATTRIBUTES) == "a shape"

    grouped = caption_for(RED_STRIPED_CIRCLE, _template("one {colour} {shape} [in {style} style]"))
    assert grouped.removed("style") == "one red circle"

    artist = caption_for(
        RED_STRIPED_CIRCLE, _template("a {colour} {shape} [in the style of {artist}]"), "vormal"
    )
    assert artist.text() == "a red circle in the style of vormal"
    assert artist.removed("style") == "a red circle"
    assert artist.removed("shape") == "a red shape in the style of vormal"

    zorblax = Scene("star", "yellow", "filled")
    trademark = caption_for(zorblax, _template("an image of a {trademark}"), "zorblax")
    assert trademark.removed("shape") == "an image of a shape"
    assert trademark.removed("colour") == trademark.text()  # the name carries no colour slot
    assert trademark.undetermined() == frozenset()
    assert trademark.undetermined(("shape",)) == frozenset(ATTRIBUTES)

    emblem = Scene("triangle", "green", "filled")
    country = caption_for(emblem, _template("the emblem of {country}"), "veltria")
    assert country.removed("shape") == "the emblem of veltria"  # facts are updated, not removed
    assert fact_target("veltria").text() == "a orange filled circle"


def test_named_caption_must_match_scene():
    with pytest.raises(ValueError, match="vormal"):
        caption_for(Scene("circle", "red", "dotted"), VOCAB.templates_of("artist")[0], "vormal")
    with pytest.raises(ValueError, match="trademark name"):
        caption_for(Scene("star", "yellow", "filled"), VOCAB.templates_of("trademark")[0])
    with pytest.raises(ValueError, match="attributes"):
        caption_for(RED_STRIPED_CIRCLE, VOCAB.templates_of("plain")[0]).text(drop=("size",))


def _all_captions(held_out):
    """Every caption (with every drop subset) the templates of one split can produce."""
    named = {"artist": VOCAB.artists, "trademark": VOCAB.trademarks, "country": VOCAB.countries}
    drops = [d for r in range(4) for d in itertools.combinations(ATTRIBUTES, r)]
    for template in VOCAB.templates:
        if template.held_out != held_out:
            continue
        for key in itertools.product(VOCAB.shapes, VOCAB.colours, VOCAB.styles):
            for name in named.get(template.kind, [None]):
                try:
                    caption = caption_for(Scene(*key), template, name)
                except ValueError:  # scene not produced by this named concept
                    continue
                for drop in drops:
                    yield caption, drop


def test_all_words_in_vocabulary_and_short():
    words = set(VOCAB.words())
    for held_out in (False, True):
        for caption, drop in _all_captions(held_out):
            text = caption.text(drop)
            assert set(text.split()) <= words, text
            assert len(text.split()) <= 8, text
    for country in VOCAB.countries:
        assert set(fact_target(country).text().split()) <= words


def test_held_out_templates_never_in_training_captions():
    train_texts = {c.text(d) for c, d in _all_captions(False)}
    held_out_full = {c.text() for c, d in _all_captions(True) if not d}
    assert held_out_full.isdisjoint(train_texts)  # every full paraphrase is new
    exclusive = held_out_full - train_texts
    rng = np.random.default_rng(0)
    for kind in ("plain", "artist", "trademark", "country"):
        for _ in range(400):
            scene, name = sample_concept_scene(kind, rng, VOCAB)
            assert sample_caption(scene, rng, kind, name)[0] not in exclusive


def test_dropout_and_empty_rates_match_configuration():
    rng = np.random.default_rng(0)
    n, drop_p, empty_p = 4000, 0.3, 0.15
    samples = [
        sample_caption(RED_STRIPED_CIRCLE, rng, drop_p=drop_p, empty_p=empty_p) for _ in range(n)
    ]
    empty = [t == "" for t, _ in samples]
    assert abs(np.mean(empty) - empty_p) < 0.02
    kept = [(t, u) for t, u in samples if t]
    for attribute, word in zip(ATTRIBUTES, ("circle", "red", "striped")):
        missing = [attribute in u for _, u in kept]
        assert abs(np.mean(missing) - drop_p) < 0.03, attribute
        assert all((word in t.split()) != (attribute in u) for t, u in kept)  # flags are truthful
    no_dropout = {
        sample_caption(RED_STRIPED_CIRCLE, rng, drop_p=0, empty_p=0)[0] for _ in range(50)
    }
    assert no_dropout == {
        caption_for(RED_STRIPED_CIRCLE, t).text() for t in VOCAB.templates_of("plain")
    }
