"""Attacks that try to bring an edited concept back, as data: each is fitted to the model it
attacks (white box: its weights with the edit applied) and gives, per budget, an encoder of
attacked prompts.

An attack changes only what the denoiser is conditioned on, never the weights, so one harness
judges every editor against every attack the same way. Budget 0 is where an attack starts: the
prompt itself (the concept vector; textual inversion from the concept's own embeddings), or the
words it starts from (an initializer word, a filler prefix).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loco_lightning.editing.requests import EditRequest
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.models import Conditioning, LocoModel
from loco_lightning.models.pipeline import encode_prompts
from loco_lightning.models.sampling import noised, told_guidance

ATTACKS: dict[str, type[Attack]] = {}  # name -> class, filled on definition

Encoder = Callable[[list[str]], Conditioning]  # prompts -> the attacked conditioning


@dataclass(frozen=True)
class Examples:
    """What the attacker holds: images of the concept the unedited model made, and their prompts.

    Attributes:
        prompts: the prompt of each image (the edit requests' prompts with the concept).
        x0: (N, C, H, W) those images as the denoiser denoises them (:func:`clean_latents`).
    """

    prompts: tuple[str, ...]
    x0: Tensor


@dataclass(frozen=True)
class Attack(ABC):
    """A recovery attack and its budgets (ascending; the first is usually 0: no attack)."""

    name: ClassVar[str]
    budget: ClassVar[str]  # what a budget counts, for the card's column

    def __init_subclass__(cls, name: str | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            ATTACKS[name] = cls

    @property
    @abstractmethod
    def budgets(self) -> tuple[float, ...]:
        """The budgets the card reports, ascending."""

    @abstractmethod
    def fit(
        self, model: LocoModel, requests: Sequence[EditRequest], examples: Examples
    ) -> list[Encoder]:
        """One encoder of attacked prompts per budget, fitted to ``model`` as it is now."""

    def check_budgets(self, *, integer: bool = False) -> None:
        """Refuse budgets that are empty, negative, not finite, unsorted or (steps) fractional."""
        b = self.budgets
        bad = (
            not b
            or any(not math.isfinite(x) or x < 0 for x in b)
            or list(b) != sorted(set(b))
            or (integer and any(x != int(x) for x in b))
        )
        if bad:
            kind = "whole numbers" if integer else "finite numbers"
            raise ValueError(
                f"{self.name}: {self.budget}={list(b)} must be {kind} >= 0 in ascending order "
                f"without repeats, e.g. [0, 25, 100]."
            )


def plain(model: LocoModel) -> Encoder:
    """The prompts as the pipeline encodes them: budget 0."""
    return model.encode


@dataclass(frozen=True)
class ConceptVector(Attack, name="concept_vector"):
    """Ring-A-Bell's concept vector (Tsai et al., 2024): the mean difference between the text
    encoder's states of prompts with and without the concept (the edit requests' pairs), added to
    an attacked prompt's states times a scale. No optimisation: what an edit that only remaps
    the concept's own keys and values may miss.

    Attributes:
        scales: the budgets, the vector's multiples added (0: the prompt itself).
    """

    budget: ClassVar[str] = "scale"

    scales: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)

    def __post_init__(self) -> None:
        self.check_budgets()

    @property
    def budgets(self) -> tuple[float, ...]:
        return tuple(self.scales)

    @torch.no_grad()
    def fit(
        self, model: LocoModel, requests: Sequence[EditRequest], examples: Examples
    ) -> list[Encoder]:
        pairs = [p for r in requests for p in r.pairs()]
        with_concept = model.encode([w for w, _, _ in pairs]).context
        without = model.encode([wo for _, wo, _ in pairs]).context
        vector = (with_concept - without).mean(0)

        def shifted(scale: float) -> Encoder:
            def encode(prompts: list[str]) -> Conditioning:
                cond = model.encode(prompts)
                return cond._replace(context=cond.context + scale * vector)

            return encode

        return [plain(model) if s == 0 else shifted(s) for s in self.scales]


@dataclass(frozen=True, kw_only=True)
class EmbeddingAttack(Attack):
    """What textual inversion and the prompt attack share: token embeddings of the attacked
    prompts (:class:`Slot`, in every text encoder) learned with Adam on the edited model's own
    training loss (:func:`noised`) over the unedited model's images of the concept.

    Attributes:
        steps: the budgets, Adam steps taken (one training run, read at each budget).
        lr: Adam's learning rate.
        batch_size: images per step.
        seed: seed of every step's images, noise and noise levels.
    """

    budget: ClassVar[str] = "steps"

    steps: tuple[int, ...] = (0, 50, 200)
    lr: float = 5e-3
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        self.check_budgets(integer=True)
        if not (math.isfinite(self.lr) and self.lr > 0) or self.batch_size < 1:
            raise ValueError(
                f"{self.name}: lr={self.lr}, batch_size={self.batch_size}: give lr > 0 and "
                "batch_size >= 1."
            )

    @property
    def budgets(self) -> tuple[float, ...]:
        return tuple(self.steps)

    @abstractmethod
    def slots(
        self, model: LocoModel, requests: Sequence[EditRequest], prompts: Sequence[str]
    ) -> list[Slot]:
        """The embeddings to learn, at their starting values, for prompts as :meth:`written`."""

    def written(self, prompts: Sequence[str]) -> list[str]:
        """The prompts as the attack writes them (the slots' tokens in place)."""
        return list(prompts)

    def fit(
        self, model: LocoModel, requests: Sequence[EditRequest], examples: Examples
    ) -> list[Encoder]:
        prompts = self.written(examples.prompts)
        model.check_prompts(prompts)
        slots = self.slots(model, requests, prompts)
        params = [s.vectors for s in slots]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        g = torch.Generator().manual_seed(self.seed)
        kind = kind_of(model.denoiser)
        snapshots = {}
        for step in range(max(self.steps) + 1):
            if step in self.steps:
                snapshots[step] = [p.detach().clone() for p in params]
            if step == max(self.steps):
                break
            pick = torch.randint(len(prompts), (self.batch_size,), generator=g)
            x0 = examples.x0[pick.to(examples.x0.device)]
            noise = torch.randn(x0.shape, generator=g).to(x0)
            x_t, t, target = noised(model, x0, noise, torch.rand(self.batch_size, generator=g))
            with replaced(slots):
                cond = encode_prompts(
                    model.pipeline, model.family, [prompts[i] for i in pick.tolist()]
                )
            cond = told_guidance(model, cond, model.guidance)
            out = kind.forward(
                model.denoiser, kind.pack(x_t), t, cond.context, cond.added, cond.mask
            )
            out = kind.unpack(out, model.pipeline)[:, : x0.shape[1]]  # no learned variance
            loss = F.mse_loss(out.float(), target.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def encoder(vectors: list[Tensor]) -> Encoder:
            @torch.no_grad()
            def encode(prompts: list[str]) -> Conditioning:
                prompts = self.written(prompts)
                model.check_prompts(prompts)
                with replaced(slots, vectors):
                    return encode_prompts(model.pipeline, model.family, prompts)

            return encode

        return [encoder(snapshots[s]) for s in self.steps]


@dataclass(frozen=True, kw_only=True)
class TextualInversion(EmbeddingAttack, name="textual_inversion"):
    """Textual inversion against an edit (Pham et al., *Circumventing Concept Erasure Methods*,
    2024): the concept's token embeddings are relearned on the edited model, then the ordinary
    prompts are written with them (each text encoder's embeddings of the concept's tokens are
    replaced wherever those tokens occur).

    Attributes:
        initializer: a word whose embedding every learned vector starts from (TI's initializer
            token; budget 0 then says that word instead of the concept), or None to start from
            the concept's own embeddings (budget 0 is the prompt itself: the attacker refines).
    """

    initializer: str | None = None

    def slots(
        self, model: LocoModel, requests: Sequence[EditRequest], prompts: Sequence[str]
    ) -> list[Slot]:
        return concept_slots(model, requests, prompts, self.initializer)


@dataclass(frozen=True, kw_only=True)
class PromptAttack(EmbeddingAttack, name="prompt"):
    """A prompt attack in the manner of UnlearnDiffAtk (Zhang et al., 2024), in embedding space:
    ``tokens`` token embeddings put before every prompt and learned on the edited model to bring
    back what the unedited model drew, one prefix for all prompts (a universal attack; the
    original optimizes discrete tokens per prompt). The concept's own words stay in the prompt.

    Attributes:
        tokens: prefix words learned, written as ``filler`` repeated (the budget-0 prompt;
            every token of that prefix is learned).
        filler: a word of the tokenizers the prefix starts from.
    """

    tokens: int = 5
    filler: str = "a"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokens < 1:
            raise ValueError(f"{self.name}: tokens={self.tokens}: give 1 or more prefix tokens.")

    @property
    def prefix(self) -> str:
        return " ".join([self.filler] * self.tokens)

    def written(self, prompts: Sequence[str]) -> list[str]:
        return [f"{self.prefix} {p}" for p in prompts]

    def slots(
        self, model: LocoModel, requests: Sequence[EditRequest], prompts: Sequence[str]
    ) -> list[Slot]:
        slots = []
        for name in model.family.text_encoders:
            tokenizer = getattr(model.pipeline, name.replace("text_encoder", "tokenizer"))
            embedding = token_embedding(getattr(model.pipeline, name))
            word_ids(tokenizer, self.filler, "filler")
            ids = tokenizer(self.prefix, add_special_tokens=False).input_ids  # as written
            ids_t = torch.tensor(ids, device=embedding.weight.device)
            start = embedding.weight[ids_t].detach().clone().float()
            slots.append(Slot(embedding, ids_t, start.requires_grad_(True)))
        return slots


@dataclass
class Slot:
    """One text encoder's embeddings of a concept's tokens, put in wherever those tokens occur."""

    embedding: nn.Embedding
    ids: Tensor  # (n,) the concept's token ids
    vectors: Tensor  # (n, D) what replaces their embeddings (learned)

    def hook(self, vectors: Tensor) -> Callable:
        n = len(self.ids)

        def put(module, inputs, output: Tensor) -> Tensor:
            input_ids = inputs[0]
            if input_ids.shape[1] < n:
                return output
            windows = input_ids.unfold(1, n, 1)  # (B, T - n + 1, n)
            hits = (windows == self.ids.to(input_ids.device)).all(-1).nonzero().tolist()
            if not hits:
                return output
            output = output.clone()
            end = {}  # runs that overlap an earlier one are not runs ("a a a a a a red …")
            for b, p in hits:
                if p >= end.get(b, 0):
                    output[b, p : p + n] = vectors.to(output)
                    end[b] = p + n
            return output

        return put


def concept_slots(
    model: LocoModel,
    requests: Sequence[EditRequest],
    prompts: Sequence[str],
    initializer: str | None = None,
) -> list[Slot]:
    """Learnable embeddings of each request's concept tokens in each of the model's text
    encoders, starting from the encoder's own (or each from the mean embedding of
    ``initializer``'s tokens).

    Raises:
        ValueError: a concept's tokens occur in none of ``prompts`` for some encoder (nothing
            to learn there), or ``initializer`` is no word of the tokenizer.
    """
    pipe = model.pipeline
    slots = []
    for name in model.family.text_encoders:
        tokenizer = getattr(pipe, name.replace("text_encoder", "tokenizer"))
        embedding = token_embedding(getattr(pipe, name))
        said = tokenizer(list(prompts), add_special_tokens=False).input_ids
        for request in requests:
            ids = tokenizer(request.concept, add_special_tokens=False).input_ids
            if not any(_contains(row, ids) for row in said):
                raise ValueError(
                    f"{name}: the tokens of concept {request.concept!r} ({ids}) occur in none of "
                    f"the attack's prompts (e.g. {prompts[0]!r}); write the concept in them as "
                    "the request does."
                )
            ids_t = torch.tensor(ids, device=embedding.weight.device)
            start = embedding.weight[ids_t]
            if initializer is not None:
                start = embedding.weight[word_ids(tokenizer, initializer)].mean(0).expand_as(start)
            vectors = start.detach().clone().float().requires_grad_(True)
            slots.append(Slot(embedding, ids_t, vectors))
    return slots


def token_embedding(encoder: nn.Module) -> nn.Embedding:
    """The token embedding ``encoder``'s forward reads: a T5 encoder's own ``embed_tokens``
    (which need not be the model's ``shared`` input embedding), else the input embedding."""
    stack = getattr(encoder, "encoder", None)
    return getattr(stack, "embed_tokens", None) or encoder.get_input_embeddings()


def word_ids(tokenizer, word: str, said: str = "initializer") -> list[int]:
    """The ids of ``word``, refused (as option ``said``) if the tokenizer reads any of it as
    unknown."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids or tokenizer.unk_token_id in ids:
        raise ValueError(
            f"{said}={word!r} is no word of the model's tokenizer (it reads as unknown); "
            "give a word its prompts use, e.g. 'style'."
        )
    return ids


def _contains(row: list[int], ids: list[int]) -> bool:
    n = len(ids)
    return any(row[i : i + n] == ids for i in range(len(row) - n + 1))


@contextmanager
def replaced(slots: list[Slot], vectors: list[Tensor] | None = None) -> Iterator[None]:
    """The text encoders with each slot's vectors (its learned ones if None) in place of its
    concept's token embeddings."""
    with ExitStack() as stack:
        for slot, v in zip(slots, vectors or [s.vectors for s in slots]):
            stack.callback(slot.embedding.register_forward_hook(slot.hook(v)).remove)
        yield
