"""Local tokenizers: no hub download is ever needed to build one."""

from __future__ import annotations

import string

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# <eos> is not id 2: transformers' CLIP pools the legacy way (argmax of ids) when eos_token_id == 2.
SPECIALS = ("<pad>", "<bos>", "<unk>", "<eos>")


def word_tokenizer(
    words: list[str], max_length: int, chars: bool = False
) -> PreTrainedTokenizerFast:
    """A ``<bos> … <eos>``-framed, padded word-level (or character-level) tokenizer.

    Args:
        words: the vocabulary (ignored when ``chars``: printable ASCII is used).
        max_length: ``model_max_length``, the padded length the text encoder sees.
        chars: one token per character, so any prompt maps to distinct ids (test miniatures).
    """
    tokens = list(string.printable[:95]) if chars else list(words)
    vocab = {t: i for i, t in enumerate(list(SPECIALS) + [t for t in tokens if t not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = (
        pre_tokenizers.Split("", behavior="isolated") if chars else pre_tokenizers.Whitespace()
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def concept_positions(tokenizer, with_concept: str, without: str) -> list[int]:
    """Token positions of ``with_concept`` whose ids ``without`` lacks: where the concept sits.

    Raises:
        ValueError: the two prompts tokenize alike, so there is no concept to find.
    """
    ids = tokenizer(with_concept).input_ids
    rest = list(tokenizer(without).input_ids)
    positions = []
    for i, t in enumerate(ids):
        if t in rest:
            rest.remove(t)
        else:
            positions.append(i)
    if not positions:
        raise ValueError(
            f"{with_concept!r} and {without!r} have the same tokens, so there is no concept in "
            "them; the second prompt must drop (or change) the concept's words."
        )
    return positions
