"""The packaged vocabulary loads, validates and lists every caption word."""

from pathlib import Path

import pytest
import yaml

from loco_lightning.data.world import DEFAULT_VOCAB_PATH, Vocabulary, default_vocabulary


def test_default_vocabulary_contents():
    vocab = default_vocabulary()
    assert vocab.shapes == ("circle", "square", "triangle", "cross", "star", "heart")
    assert vocab.styles == ("filled", "outline", "striped", "dotted")
    assert len(vocab.colours) == len(vocab.rgb) == 8
    assert all(max(rgb) > 90 for rgb in vocab.rgb)
    assert len(vocab.artists) == len(vocab.trademarks) == len(vocab.countries) == 3
    assert vocab.removed == {"shape": "shape", "trademark": "shape"}
    assert vocab.index("colour", "blue") == vocab.colours.index("blue")
    for kind in ("plain", "artist", "trademark", "country"):
        assert vocab.templates_of(kind) and vocab.templates_of(kind, held_out=True)


def test_words_sorted_unique_and_complete():
    vocab = default_vocabulary()
    words = vocab.words()
    assert list(words) == sorted(set(words))
    assert {"shape", "emblem", "style", "vormal", "zorblax", "veltria", "red", "star"} <= set(words)
    assert not any(c in w for w in words for c in "{}[]")


def test_held_out_templates_use_only_training_words():
    vocab = default_vocabulary()

    def fixed_words(held_out):
        texts = [t.text for t in vocab.templates if t.held_out == held_out]
        return {
            w for t in texts for w in t.replace("[", " ").replace("]", " ").split() if "{" not in w
        }

    assert fixed_words(True) <= fixed_words(False)


def test_invalid_vocabulary_fails_loudly(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_VOCAB_PATH.read_text())
    raw["colours"]["navy"] = [10, 10, 80]
    bad = tmp_path / "vocab.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="navy"):
        Vocabulary.from_yaml(bad)

    raw = yaml.safe_load(DEFAULT_VOCAB_PATH.read_text())
    raw["artists"]["vormal"] = "wavy"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="wavy"):
        Vocabulary.from_yaml(bad)

    raw = yaml.safe_load(DEFAULT_VOCAB_PATH.read_text())
    raw["templates"]["plain"].append({"text": "a {colour} {artist}"})
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="artist"):
        Vocabulary.from_yaml(bad)
