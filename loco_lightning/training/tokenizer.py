"""Training the worlds' BPE tokenizer on LocoWorld captions, saved as SD saves its CLIP tokenizer.

    python -m loco_lightning.training.tokenizer OUT_FOLDER [--captions N] [--seed S]

The folder holds ``vocab.json`` + ``merges.txt`` (what transformers' ``CLIPTokenizer`` reads in
every version) and ``tokenizer.json`` / ``tokenizer_config.json`` (``model_max_length`` set,
``<|startoftext|>`` … ``<|endoftext|>``, padded with ``<|endoftext|>`` as SD-1 does).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from loco_lightning.data.world import WorldDataset, default_vocabulary
from loco_lightning.data.world.vocab import Vocabulary
from loco_lightning.models.tokenizers import clip_tokenizer, train_clip_bpe
from loco_lightning.models.world import RECORD_NAME

log = logging.getLogger(__name__)

MAX_LENGTH = 16  # the longest world caption is 11 tokens with <|startoftext|> and <|endoftext|>


def named_concepts(vocab: Vocabulary) -> list[str]:
    """Invented names (artists, trademarks, countries): the words kept as two BPE tokens."""
    return sorted({*vocab.artists, *vocab.trademarks, *vocab.countries})


def train_world_tokenizer(vocab: Vocabulary | None = None, captions: int = 20_000, seed: int = 123):
    """A ``CLIPTokenizer`` trained on ``captions`` world captions of stream ``seed``.

    Every plain word becomes one token and every invented name two, as "Van Gogh" is several
    tokens for SD's CLIP.
    """
    vocab = vocab or default_vocabulary()
    stream = WorldDataset(length=captions, seed=seed, vocab=vocab, empty_p=0.0)
    texts = [stream[i]["caption"] for i in range(captions)]
    bpe_vocab, merges = train_clip_bpe(texts, split=named_concepts(vocab))
    return clip_tokenizer(bpe_vocab, merges, MAX_LENGTH)


def save_tokenizer(tokenizer, folder: str | Path) -> Path:
    """``save_pretrained`` plus ``vocab.json`` and ``merges.txt``, the files older CLIP loaders
    (transformers 4's slow ``CLIPTokenizer``) read."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False) + "\n")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in merges))
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tok = train_world_tokenizer(captions=args.captions, seed=args.seed)
    folder = save_tokenizer(tok, args.out)
    record = {
        "command": " ".join(["python -m loco_lightning.training.tokenizer", *sys.argv[1:]]),
        "captions": args.captions,
        "seed": args.seed,
        "vocab_size": len(tok),
        "model_max_length": tok.model_max_length,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {folder} ({len(tok)} tokens)")


if __name__ == "__main__":
    main()
