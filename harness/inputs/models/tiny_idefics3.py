"""Build a tiny, random, deterministic Idefics3 (SigLIP-style vision, pixel shuffle, Llama text model).

Idefics3 resizes an image to at most 128 pixels on its long side, cuts it into
64x64 tiles plus a downscaled global view, encodes each with the vision tower,
and pixel-shuffles 4x4 patch features into 2x2 (`scale_factor=2`): 4 image
tokens per tile, each tile framed by `<fake_token_around_image><row_i_col_j>`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.inputs.models import tokenizer as tk
from harness.inputs.models import weights

if TYPE_CHECKING:
    from transformers import Idefics3Config

# Idefics3Processor looks up row/column tags up to 6x6 whatever the tiling.
TILE_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *TILE_TOKENS,
]
# Never emitted (zero output rows, see weights.redraw): every special token but
# the end of utterance (the end of turn, whose text engines may or may not print).
NEVER_EMITTED = [t for t in SPECIAL_TOKENS if t != "<end_of_utterance>"]

# SmolVLM's turn format: `<|im_start|>User:<image>question<end_of_utterance>\nAssistant:`.
CHAT_TEMPLATE = """\
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] | capitalize + ':' }}
    {%- if message['content'] is string %}
        {{- message['content'] }}
    {%- else %}
        {%- for part in message['content'] %}
            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}
                {{- '<image>' }}
            {%- elif 'text' in part %}
                {{- part['text'] }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<end_of_utterance>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- 'Assistant:' }}
{%- endif %}"""

TILE_SIZE = 64
PATCH_SIZE = 16
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
# Logits spread by about sqrt(128) * 0.3 = 3.4 nats (see tiny_llava.HEAD_STD).
HEAD_STD = 0.3


def recipe_hash() -> str:
    """Name of the recipe (this file, the shared helpers, library versions)."""
    return weights.recipe_hash(__file__)


def _config(tokenizer_size: int, token_ids: dict[str, int]) -> Idefics3Config:
    """head_dim 64 on both towers, which vLLM's CPU attention supports.

    vLLM reads `tie_word_embeddings` from the text config, so it is set there
    as well as at the top.
    """
    from transformers import Idefics3Config

    return Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": tk.padded_vocab(tokenizer_size),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<end_of_utterance>"],
            "pad_token_id": token_ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "image_size": TILE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        image_token_id=token_ids["<image>"],
        scale_factor=SCALE_FACTOR,
        pad_token_id=token_ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def build(out_dir: Path) -> None:
    """Write the tiny model, tokenizer and processor to `out_dir` with `save_pretrained`."""
    from transformers import (
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    raw = tk.train_bpe(SPECIAL_TOKENS)
    token_ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    # Long side at most 128 pixels: up to 2x2 tiles of 64 plus the global view.
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 2 * TILE_SIZE},
        max_image_size={"longest_edge": TILE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )

    weights.draw_and_save(
        Idefics3ForConditionalGeneration, _config(len(tokenizer), token_ids), processor, out_dir,
        tokenizer_size=len(tokenizer),
        never_emitted=[token_ids[t] for t in NEVER_EMITTED] + tk.not_text(raw, SPECIAL_TOKENS),
        bos=token_ids["<|endoftext|>"], eos=[token_ids["<end_of_utterance>"], token_ids["<|endoftext|>"]],
        pad=token_ids["<|endoftext|>"], head_std=HEAD_STD,
    )
