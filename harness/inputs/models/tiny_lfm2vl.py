"""Build a tiny, random, deterministic LFM2-VL (SigLIP2 NaFlex vision + LFM2 conv/attention text model).

LFM2-VL tiles large images (here 64x64 tiles plus a thumbnail), downsamples
the vision features by pixel unshuffle, and runs a hybrid language model whose
layers are short convolutions or attention. Two variants are registered:
two query heads (the default, which shows vLLM CPU's rotary bug for 3-D
multi-head queries, see repro/vllm_cpu_rotary_3d.py) and one query head,
which vLLM CPU runs at parity.

vLLM always ties LFM2's output head to its embeddings, so this checkpoint is
tied too (an untied one would load in vLLM with the wrong head).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.inputs.models import tokenizer as tk
from harness.inputs.models import weights

if TYPE_CHECKING:
    from transformers import Lfm2VlConfig

# Tied head: logits are the final hidden state times the embeddings, so the
# embeddings are drawn smaller than the untied recipes' N(0, 1) (logit spread
# about sqrt(128) * 0.3 * 1 = 3.4 nats, peaky without float32 noise dominating).
EMBED_STD = 0.3
FINAL_NORM = "model.language_model.embedding_norm.weight"

TILE_TOKENS = [f"<|img_row_{r}_col_{c}|>" for r in range(1, 5) for c in range(1, 5)]
SPECIAL_TOKENS = [
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<|image_start|>",
    "<|image_end|>",
    "<|img_thumbnail|>",
    *TILE_TOKENS,
]
VISION_TOKENS = SPECIAL_TOKENS[5:]
# With the head tied, a zeroed output row is a zeroed embedding too, so only
# the chat markers keep theirs; the rest are never emitted (see weights.redraw).
NEVER_EMITTED = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", *VISION_TOKENS]

# ChatML with LFM2's start-of-text and one `<image>` per image part.
CHAT_TEMPLATE = """\
{{- '<|startoftext|>' }}
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' }}
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
    {{- '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}"""


def recipe_hash() -> str:
    """Name of the recipe (this file, the shared helpers, library versions)."""
    return weights.recipe_hash(__file__)


def _config(tokenizer_size: int, token_ids: dict[str, int], num_heads: int) -> Lfm2VlConfig:
    """One conv layer and one attention layer; vision head_dim 64.

    vLLM's LFM2 reads `conv_dim` and `block_dim`, which transformers' config
    does not define, so both are set explicitly.
    """
    from transformers import Lfm2VlConfig

    return Lfm2VlConfig(
        text_config={
            "model_type": "lfm2",
            "architectures": ["Lfm2ForCausalLM"],
            "vocab_size": tk.padded_vocab(tokenizer_size),
            "hidden_size": 128,
            "intermediate_size": 256,
            "block_auto_adjust_ff_dim": False,
            "num_hidden_layers": 2,
            "layer_types": ["conv", "full_attention"],
            "num_attention_heads": num_heads,
            "num_key_value_heads": 1,
            "conv_L_cache": 3,
            "conv_bias": False,
            "conv_dim": 128,
            "block_dim": 128,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "bos_token_id": token_ids["<|startoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|pad|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "model_type": "siglip2_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "patch_size": 16,
            "num_patches": 64,
            "vision_use_head": False,
        },
        image_token_id=token_ids["<image>"],
        projector_hidden_size=128,
        downsample_factor=2,
        tie_word_embeddings=True,
    )


def build(out_dir: Path, num_heads: int = 2) -> None:
    """Write the tiny model, tokenizer and processor to `out_dir` with `save_pretrained`.

    `num_heads` is the language model's query head count (one KV head either way).
    """
    from transformers import (
        Lfm2VlForConditionalGeneration,
        Lfm2VlImageProcessor,
        Lfm2VlProcessor,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    raw = tk.train_bpe(SPECIAL_TOKENS)
    token_ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
    )
    # 64x64 tiles of 4 tokens, up to 2x2 of them plus a thumbnail of at most 16.
    image_processor = Lfm2VlImageProcessor(
        encoder_patch_size=16,
        downsample_factor=2,
        min_image_tokens=4,
        max_image_tokens=16,
        tile_size=64,
        min_tiles=2,
        max_tiles=4,
        do_image_splitting=True,
        use_thumbnail=True,
    )
    processor = Lfm2VlProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)

    # transformers 5 saves the SigLIP2 tower without its `vision_model.` level; vLLM 0.32 wants it.
    weights.draw_and_save(
        Lfm2VlForConditionalGeneration, _config(len(tokenizer), token_ids, num_heads), processor, out_dir,
        tokenizer_size=len(tokenizer),
        never_emitted=[token_ids[t] for t in NEVER_EMITTED] + tk.not_text(raw, SPECIAL_TOKENS),
        bos=token_ids["<|startoftext|>"], eos=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        pad=token_ids["<|pad|>"], renames=[("model.vision_tower.", "model.vision_tower.vision_model.")],
        embed_std=EMBED_STD, zero_mean_norms=[FINAL_NORM],
    )
