"""The reference tokenizer's decode: what an engine's output text must be for its output ids.

Loaded on first use from the reference checkpoint's tokenizer files (a run with stored references has no
processor of its own). Two decodes are legitimate: of the output ids alone (transformers' `decode`), and in the
context of the prompt's last tokens (engines that detokenize incrementally from the prompt, as vLLM does: with a
SentencePiece tokenizer the first word keeps its leading space). `spaces_between_special_tokens` is passed where
the tokenizer takes it (slow tokenizers); engines that join special tokens without spaces are judged by the
packed form the same way.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any


class Detokenizer:
    def __init__(self, model: str) -> None:
        self.model = model

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True,
               spaces_between_special_tokens: bool = True) -> str:
        options: dict[str, Any] = {"skip_special_tokens": skip_special_tokens}
        if not getattr(self.tokenizer, "is_fast", True):
            options["spaces_between_special_tokens"] = spaces_between_special_tokens
        return self.tokenizer.decode(list(ids), **options)

    def decode_after(self, context: Sequence[int], ids: Sequence[int], skip_special_tokens: bool = True,
                     spaces_between_special_tokens: bool = True) -> str:
        """`ids` decoded after `context` (the prompt's last tokens), as an incremental detokenizer does."""
        before = self.decode(context, skip_special_tokens, spaces_between_special_tokens)
        both = self.decode([*context, *ids], skip_special_tokens, spaces_between_special_tokens)
        return both[len(before):] if both.startswith(before) else self.decode(ids, skip_special_tokens,
                                                                              spaces_between_special_tokens)

    @cached_property
    def eos_ids(self) -> frozenset[int]:
        """The ids an engine honouring EOS stops at: the tokenizer's EOS and the checkpoint's generation config's
        (generation_config.json, else the one its config implies), as vLLM and transformers' `generate` both
        take them."""
        from transformers import AutoConfig, GenerationConfig

        try:
            generation = GenerationConfig.from_pretrained(self.model)
        except OSError:
            generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(self.model))
        ids: set[int] = set()
        for eos in (self.tokenizer.eos_token_id, generation.eos_token_id):
            ids |= {eos} if isinstance(eos, int) else set(eos or ())
        return frozenset(ids)
