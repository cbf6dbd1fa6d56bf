"""Local tokenizers: no hub download is ever needed to build one."""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BatchEncoding, PreTrainedTokenizerFast

# <eos> is not id 2: transformers' CLIP pools the legacy way (argmax of ids) when eos_token_id == 2.
SPECIALS = ("<pad>", "<bos>", "<unk>", "<eos>")


def word_tokenizer(
    words: list[str], max_length: int, chars: bool = False, bos: bool = True
) -> PreTrainedTokenizerFast:
    """A ``<bos> … <eos>``-framed, padded word-level (or character-level) tokenizer.

    Args:
        words: the vocabulary (ignored when ``chars``: printable ASCII is used).
        max_length: ``model_max_length``, the padded length the text encoder sees.
        chars: one token per character, so any prompt maps to distinct ids (test miniatures).
        bos: start with ``<bos>`` (CLIP); without, only ``<eos>`` ends a prompt (T5).
    """
    tokens = list(string.printable[:95]) if chars else list(words)
    vocab = {t: i for i, t in enumerate(list(SPECIALS) + [t for t in tokens if t not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = (
        pre_tokenizers.Split("", behavior="isolated") if chars else pre_tokenizers.Whitespace()
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>" if bos else "$A <eos>",
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


@dataclass(frozen=True)
class ContextTokens:
    """The token ids a denoiser's text context holds, position by position.

    Most pipelines hand the denoiser one row per token of the prompt as the tokenizer splits it.
    SANA's puts an instruction before the prompt and keeps the first and the last
    ``length - 1`` rows of the result; positions computed here are rows of the encoded context
    in either case.

    A context may hold several tokenizers' rows one after another (SD3: CLIP's, then T5's); each
    is a segment, a ``ContextTokens`` that starts at row ``start``. Position functions take one
    segment or a sequence of them and return rows of the whole context.

    Attributes:
        tokenizer: the pipeline's tokenizer.
        length: rows of an encoded prompt (the padded length).
        prefix: text the pipeline puts before every prompt ("" for none).
        start: the row where this tokenizer's rows begin in the context.
    """

    tokenizer: Any
    length: int
    prefix: str = ""
    start: int = 0

    @classmethod
    def plain(cls, tokenizer) -> ContextTokens:
        """A tokenizer's own ids, padded to its ``model_max_length``."""
        return cls(tokenizer, tokenizer.model_max_length)

    @property
    def special(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    def ids(self, prompts: list[str], padded: bool = False) -> list[list[int]]:
        """Each prompt's ids in context order, with the padding up to ``length`` if ``padded``."""
        tok = self.tokenizer
        if not self.prefix:
            pad = "max_length" if padded else False
            return tok(prompts, padding=pad, max_length=self.length, truncation=True).input_ids
        n_prefix = len(tok.encode(self.prefix))
        full = tok(
            [self.prefix + p for p in prompts],
            padding="max_length",
            max_length=n_prefix + self.length - 2,
            truncation=True,
        )
        keep = [0, *range(-self.length + 1, 0)]
        return [
            [ids[i] for i in keep if padded or mask[i]]
            for ids, mask in zip(full.input_ids, full.attention_mask)
        ]


Segments = ContextTokens | Sequence[ContextTokens]


def segments(tokens: Segments) -> tuple[ContextTokens, ...]:
    """The segments of a context given as one or several."""
    return (tokens,) if isinstance(tokens, ContextTokens) else tuple(tokens)


def per_segment(tokens: Segments, positions: Callable[[ContextTokens], list]) -> list[tuple]:
    """``positions(segment)`` in each segment on its own (rows from 0), moved to the rows of the
    whole context and joined item by item (SD3: an edit's CLIP rows, then its T5 rows).

    Args:
        positions: one sequence per item (prompt or pair of prompts) of rows or of (source row,
            target row) pairs, the same number of items for every segment.
    """
    joined = None
    for segment in segments(tokens):
        start = segment.start
        found = positions(dataclasses.replace(segment, start=0))
        moved = [tuple(_moved(p, start) for p in item) for item in found]
        joined = moved if joined is None else [a + b for a, b in zip(joined, moved)]
    return joined


def _moved(position, by: int):
    return position + by if isinstance(position, int) else tuple(p + by for p in position)


def concept_positions(tokens: Segments, with_concept: str, without: str) -> list[int]:
    """Positions of ``with_concept`` whose ids ``without`` lacks: where the concept sits (in
    every segment of the context).

    Raises:
        ValueError: the two prompts tokenize alike, so there is no concept to find.
    """
    [positions] = per_segment(tokens, lambda s: [_concept_rows(s, with_concept, without)])
    if not positions:
        raise ValueError(
            f"{with_concept!r} and {without!r} have the same tokens, so there is no concept in "
            "them; the second prompt must drop (or change) the concept's words."
        )
    return list(positions)


def _concept_rows(segment: ContextTokens, with_concept: str, without: str) -> list[int]:
    ids, rest = segment.ids([with_concept, without])
    rest = list(rest)
    positions = []
    for i, t in enumerate(ids):
        if t in rest:
            rest.remove(t)
        else:
            positions.append(i)
    return positions


def last_token(tokens: ContextTokens, prompt: str) -> int:
    """Position of the prompt's last token that is not a special one (before CLIP's and T5's
    end-of-text; UCE's ``attention_mask.sum() - 2`` on CLIP), 0 when it has none."""
    [ids] = tokens.ids([prompt])
    special = tokens.special
    return max((i for i, t in enumerate(ids) if t not in special), default=0)


# CLIP's own text pipeline (transformers' ``CLIPTokenizer``): lower-cased, split into words and
# punctuation, byte-level, BPE with ``</w>`` ending each word. A BPE trained through the same steps
# saves as a ``vocab.json`` + ``merges.txt`` that ``CLIPTokenizer`` loads as it loads SD's.
CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
    r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"


def _clip_pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return tok


def train_clip_bpe(
    texts: Iterable[str], split: Iterable[str] = (), vocab_size: int = 1000
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a CLIP-style byte-level BPE on ``texts``; the words in ``split`` stay two tokens.

    The merge that would complete each word of ``split`` is dropped (with its token), so an
    invented name such as ``zorblax`` becomes two pieces the way "Van Gogh" is several tokens for
    SD's CLIP, and key-token choices for multi-token concepts get exercised.

    Returns:
        ``vocab`` (token -> id, contiguous, ``<|startoftext|>`` = 0 and ``<|endoftext|>`` = 1) and
        ``merges`` in rank order: what ``vocab.json`` and ``merges.txt`` hold.

    Raises:
        ValueError: a word of ``split`` is a single character, or never became one token.
    """
    tok = _clip_pipeline(Tokenizer(models.BPE(end_of_word_suffix=WORD_END, unk_token=CLIP_EOS)))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[CLIP_BOS, CLIP_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=WORD_END,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    state = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = state["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    dropped = set()
    for word in split:
        pieces = tok.encode(word).tokens
        if len(pieces) != 1 or len(word) < 2:
            raise ValueError(
                f"cannot split {word!r}: it tokenizes as {pieces}; give words of two or more "
                "letters that the training texts use often enough to become one token"
            )
        dropped.add(pieces[0])
    merges = [m for m in merges if m[0] + m[1] not in dropped]
    kept = sorted((i, t) for t, i in vocab.items() if t not in dropped)
    return {t: n for n, (_, t) in enumerate(kept)}, merges


def clip_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int, pad: str = CLIP_EOS
):
    """A transformers ``CLIPTokenizer`` over a trained BPE, padded as SD pads its prompts.

    Args:
        vocab: token -> id (``train_clip_bpe``).
        merges: BPE merges in rank order.
        max_length: ``model_max_length``: every prompt is padded to it (SD-1/2: 77).
        pad: the padding token: ``<|endoftext|>`` as in SD-1, ``!`` as in SD-2.
    """
    from transformers import CLIPTokenizer

    if pad not in vocab:
        raise ValueError(f"padding token {pad!r} is not in the vocabulary")
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m) for m in merges],
        pad_token=pad,
        model_max_length=max_length,
    )


class RememberingTokenizer:
    """A tokenizer that tokenizes each text once and answers from memory after that.

    A world trainer encodes the same few thousand captions through the pipeline's own
    ``encode_prompt`` at every step; its tokenizer calls (a padded batch, the ``longest`` batch
    that checks for truncation, SD's per-prompt textual-inversion ``tokenize``) cost a planted
    SD-XL world 4% of a step (0.248 s against 0.239, one process at one thread). Calls are
    answered as the tokenizer answers them: a batch padded to the model length is its texts'
    remembered rows, a right-padded ``longest`` batch those rows cut to the longest text; any
    other call goes to the tokenizer. Everything else is the wrapped tokenizer's.
    """

    _PADDING = ("padding", "truncation", "max_length", "return_tensors")

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._rows: dict[tuple, tuple[dict[str, Any], int]] = {}
        self._tokens: dict[tuple, list[str]] = {}

    def __getattr__(self, name: str) -> Any:
        # asked only for what this object lacks; a copy under construction lacks the tokenizer
        if "tokenizer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["tokenizer"], name)

    def tokenize(self, text: str, **kwargs) -> list[str]:
        key = (text, *sorted(kwargs.items()))
        if key not in self._tokens:
            self._tokens[key] = self.tokenizer.tokenize(text, **kwargs)
        return list(self._tokens[key])

    def __call__(self, text=None, *args, **kwargs):
        tok = self.tokenizer
        padding = kwargs.get("padding")
        fixed = padding == "max_length" and kwargs.get("truncation") is True
        fixed = fixed and kwargs.get("max_length", tok.model_max_length) == tok.model_max_length
        longest = padding == "longest" and not kwargs.get("truncation")
        longest = longest and "max_length" not in kwargs and tok.padding_side == "right"
        batch = isinstance(text, list) and text and all(isinstance(t, str) for t in text)
        if args or not batch or kwargs.get("return_tensors") != "pt" or not (fixed or longest):
            return tok(text, *args, **kwargs)
        rows = [self._row(t, kwargs) for t in text]
        if longest and any(n > tok.model_max_length for _, n in rows):
            return tok(text, *args, **kwargs)  # the padded rows were cut short
        width = max(n for _, n in rows) if longest else tok.model_max_length
        keys = rows[0][0].keys()
        return BatchEncoding({k: torch.cat([r[k][:, :width] for r, _ in rows]) for k in keys})

    def _row(self, text: str, kwargs: dict) -> tuple[dict[str, Any], int]:
        """``text`` padded and cut to the model length, and its length uncut."""
        options = {k: v for k, v in kwargs.items() if k not in self._PADDING}
        key = (text, *sorted(options.items()))
        if key not in self._rows:
            tok = self.tokenizer
            padded = tok(
                [text],
                padding="max_length",
                truncation=True,
                max_length=tok.model_max_length,
                return_tensors="pt",
                **options,
            )
            length = len(tok(text, **options)["input_ids"])
            self._rows[key] = (dict(padded), length)
        return self._rows[key]
