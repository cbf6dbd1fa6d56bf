"""The world trainer's remembering tokenizer answers every call as the tokenizer itself does."""

import copy
from unittest import mock

import pytest
import torch

from loco_lightning.models.tokenizers import RememberingTokenizer
from loco_lightning.training.world import world_tokenizer

LONG = " ".join(["a red striped circle"] * 30)  # past every world tokenizer's length (16, 77)
BATCHES = [
    ["a red circle", "", "a cyan star in the style of vormal"],
    ["a red circle", LONG],
]


def calls(length: int) -> list[dict]:
    """The pipelines' tokenizer calls for a tokenizer of ``length`` tokens, and some others."""
    fixed = {"padding": "max_length", "max_length": length, "truncation": True}
    return [
        {**fixed, "return_tensors": "pt"},  # SD's and SD-XL's encode_prompt: the padded batch,
        {"padding": "longest", "return_tensors": "pt"},  # then the truncation check
        {**fixed, "add_special_tokens": True, "return_tensors": "pt"},  # IF's padded batch
        # answered by the tokenizer itself: a shorter length, no tensors, padding=True
        {**fixed, "max_length": length - 4, "return_tensors": "pt"},
        fixed,
        {"truncation": True, "return_tensors": "pt", "padding": True},
    ]


@pytest.mark.parametrize(
    "family, name", [("sd1", "tokenizer"), ("sdxl", "tokenizer_2"), ("if", "tokenizer")]
)
def test_every_call_equals_the_tokenizers_own_first_and_from_memory(family, name):
    plain = world_tokenizer(family, name)
    remembering = RememberingTokenizer(world_tokenizer(family, name))
    for batch in BATCHES:
        for options in calls(plain.model_max_length):
            theirs = plain(batch, **options)
            for _ in range(2):  # tokenized, then remembered
                ours = remembering(batch, **options)
                assert ours.keys() == theirs.keys()
                for key in theirs:
                    assert torch.equal(torch.as_tensor(ours[key]), torch.as_tensor(theirs[key]))
    for text in BATCHES[0]:
        assert remembering.tokenize(text) == plain.tokenize(text)
        assert remembering.tokenize(text) == plain.tokenize(text)
    assert remembering.model_max_length == plain.model_max_length  # the rest is the tokenizer's
    copied = copy.deepcopy(remembering)  # as Lightning may copy a module that holds one
    padded = calls(plain.model_max_length)[0]
    expected = plain(BATCHES[0], **padded).input_ids
    assert torch.equal(copied(BATCHES[0], **padded).input_ids, expected)


def test_a_remembered_text_is_not_tokenized_again():
    tokenizer = world_tokenizer()
    remembering = RememberingTokenizer(tokenizer)
    fixed, longest = calls(tokenizer.model_max_length)[:2]
    own = type(tokenizer).__call__
    with mock.patch.object(type(tokenizer), "__call__", autospec=True, side_effect=own) as call:
        remembering(BATCHES[0], **fixed)
        first = call.call_count
        assert first == 2 * len(BATCHES[0])  # each text: its padded row and its length
        remembering(list(reversed(BATCHES[0])), **fixed)
        remembering(BATCHES[0][:2], **longest)
        assert call.call_count == first
        remembering(["a blue square"], **fixed)
        assert call.call_count == first + 2
