"""The tokenizer side of the tiny recipes: one byte-level BPE trainer over the shared corpus.

Every built-in model trains its own tokenizer because each architecture's
processor expects its own special tokens (Qwen's `<|image_pad|>`, LLaVA's
`<image>`, Idefics3's `<row_1_col_1>` ...), but they all learn from the same
seeded English corpus (`corpus`).
"""
from __future__ import annotations

import math

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from harness.inputs.models.corpus import corpus

TOKENIZER_VOCAB = 500
VOCAB_MULTIPLE = 64


def train_bpe(special_tokens: list[str], vocab_size: int = TOKENIZER_VOCAB) -> Tokenizer:
    """Byte-level BPE with `special_tokens` at ids 0..len-1, in the order given."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def not_text(tok: Tokenizer, special_tokens: list[str]) -> list[int]:
    """Byte tokens that decode to a partial UTF-8 sequence or a control character.

    The corpus never uses them, but random weights would emit them, and engines
    legitimately differ in how they detokenize an unfinished character (HF
    emits U+FFFD, vLLM holds the bytes back): output texts would differ for a
    reason that is not a parity bug. Their output rows are zeroed.
    """
    special = set(special_tokens)
    return [
        i for i in range(tok.get_vocab_size())
        if tok.id_to_token(i) not in special
        and any(ch == "\ufffd" or ord(ch) < 32 or ord(ch) == 127 for ch in tok.decode([i]))
    ]


def padded_vocab(tokenizer_size: int) -> int:
    """The model's vocabulary: the tokenizer's, rounded up to a multiple of 64."""
    return math.ceil(tokenizer_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
