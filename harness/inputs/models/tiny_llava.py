"""Build a tiny, random, deterministic LLaVA (CLIP vision tower + Llama language model).

The classic LLaVA layout: one fixed-size image (64x64 here, 16 patches of 16
pixels), the second-to-last CLIP layer's patch features without the CLS token,
a two-layer GELU projector, and a Llama decoder with an untied output head.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.inputs.models import tokenizer as tk
from harness.inputs.models import weights

if TYPE_CHECKING:
    from transformers import LlavaConfig

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
]
# Never emitted (zero output rows, see weights.redraw): every special token but
# the end of turn, whose text engines may or may not print.
NEVER_EMITTED = ["<|endoftext|>", "<|im_start|>", "<image>"]

# ChatML with one `<image>` line per image part, as LLaVA-style templates write it.
CHAT_TEMPLATE = """\
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' }}
    {%- if message['content'] is string %}
        {{- message['content'] }}
    {%- else %}
        {%- for part in message['content'] %}
            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}
                {{- '<image>\\n' }}
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

IMAGE_SIZE = 64
PATCH_SIZE = 16
# Logits spread by about sqrt(128) * 0.3 = 3.4 nats: peaky, so greedy decoding
# does not flip on float32 noise (at the shared 0.08 the top tokens were 0.03 apart).
HEAD_STD = 0.3


def recipe_hash() -> str:
    """Name of the recipe (this file, the shared helpers, library versions)."""
    return weights.recipe_hash(__file__)


def _config(tokenizer_size: int, token_ids: dict[str, int]) -> LlavaConfig:
    """head_dim 64 on both towers, which vLLM's CPU attention supports.

    Three CLIP layers, of which LLaVA's default `vision_feature_layer=-2` uses
    two (vLLM drops the last one when it loads; HF computes and ignores it).
    """
    from transformers import LlavaConfig

    return LlavaConfig(
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
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "projection_dim": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 1,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        image_token_index=token_ids["<image>"],
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def build(out_dir: Path) -> None:
    """Write the tiny model, tokenizer and processor to `out_dir` with `save_pretrained`."""
    from transformers import (
        CLIPImageProcessor,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out_dir = Path(out_dir)
    raw = tk.train_bpe(SPECIAL_TOKENS)
    token_ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops
        chat_template=CHAT_TEMPLATE,
    )

    # transformers 5.19 saves LLaVA in its legacy layout (`vision_tower.embeddings...`,
    # `language_model.model...`) but without CLIP's `vision_model.` level, which vLLM 0.32 needs.
    weights.draw_and_save(
        LlavaForConditionalGeneration, _config(len(tokenizer), token_ids), processor, out_dir,
        tokenizer_size=len(tokenizer),
        never_emitted=[token_ids[t] for t in NEVER_EMITTED] + tk.not_text(raw, SPECIAL_TOKENS),
        bos=token_ids["<|endoftext|>"], eos=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        pad=token_ids["<|endoftext|>"], renames=[("vision_tower.", "vision_tower.vision_model.")], head_std=HEAD_STD,
    )
