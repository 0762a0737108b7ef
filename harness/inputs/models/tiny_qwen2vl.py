"""Build a tiny, random, deterministic Qwen2-VL that transformers and vLLM both load.

Parity runs need a real multimodal checkpoint, but the machines they run on
have no hub access and a real Qwen2-VL is gigabytes. This recipe makes one of
about 0.7 M parameters from nothing: a byte-level BPE tokenizer trained on a
seeded English corpus, a hand-written Qwen chat template, and weights drawn
from a fixed seed. Everything is a pure function of this file and the library
versions, so `recipe_hash` names the result and two builds are byte-identical.
"""
from __future__ import annotations

import hashlib
import math
import random
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import Qwen2VLConfig

SEED = 0
TOKENIZER_VOCAB = 500
VOCAB_MULTIPLE = 64
WEIGHT_STD = 0.08
EMBED_STD = 1.0

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VISION_TOKENS = SPECIAL_TOKENS[3:]

# Qwen's template, minus the default system prompt: string or list content,
# one vision block per image or video part, and the assistant generation prompt.
CHAT_TEMPLATE = """\
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' }}
    {%- if message['content'] is string %}
        {{- message['content'] }}
    {%- else %}
        {%- for part in message['content'] %}
            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif part['type'] == 'video' or 'video' in part %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
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

# Words the corpus is made of, grouped so sentences read like image captions.
COLOURS = (
    "red orange yellow green blue purple pink brown black white grey gray gold silver "
    "dark light bright pale"
).split()
ANIMALS = (
    "cat dog bird fish horse cow sheep goat pig duck chicken rabbit mouse bear lion tiger "
    "elephant monkey zebra giraffe deer fox wolf frog snake turtle owl bee butterfly"
).split()
OBJECTS = (
    "car bus bike train boat plane truck house door window table chair bed sofa lamp clock "
    "book cup plate bowl bottle glass box bag ball hat shoe shirt phone computer screen "
    "picture photo sign road street bridge tree flower grass leaf rock hill mountain river "
    "lake sea beach sky cloud sun moon star field garden park wall floor roof fence kitchen "
    "room city town building tower light water snow ice fire food bread apple banana cake "
    "pizza sandwich orange umbrella kite toy bench pole line circle square shape pattern"
).split()
PEOPLE = "man woman boy girl child person people player driver family friend group crowd".split()
ADJECTIVES = (
    "big small large little tall short long round flat old new young happy sad busy quiet "
    "empty full open closed clean wet dry warm cold hot soft hard smooth rough sharp blurry "
    "clear simple plain striped spotted wooden metal plastic shiny colourful many few"
).split()
VERBS = (
    "sits stands runs walks jumps flies swims sleeps eats drinks holds looks plays rides "
    "carries waits lies rests moves grows shines hangs leans"
).split()
PREPOSITIONS = "on in under over near behind beside between above below inside across along".split()
PLACES = "left right top bottom middle centre corner background foreground edge".split()
DESCRIBE = (
    "The image shows|This picture shows|In the photo there is|The scene contains|"
    "I can see|There is|The picture has|This image contains|We see|It shows"
).split("|")
QUESTIONS = (
    "Describe the image.|What is in the picture?|What colour is the {noun}?|"
    "How many {noun}s are there?|Where is the {noun}?|What is the {animal} doing?|"
    "Is there a {noun} in the image?|What do you see?|Describe this photo in detail.|"
    "What is the main object?"
).split("|")
NUMBERS = "one two three four five six seven eight nine ten".split()


def recipe_hash() -> str:
    """Name of the recipe: this file plus the libraries whose behaviour shapes the output.

    torch is included with transformers and tokenizers because the weights are
    drawn from its random number generator.
    """
    h = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("transformers", "tokenizers", "torch"):
        h.update(f"\0{package}=={version(package)}".encode())
    return h.hexdigest()


def _sentence(rng: random.Random) -> str:
    """One caption, question or answer-like sentence."""
    noun = rng.choice(OBJECTS + ANIMALS + PEOPLE)
    phrase = f"a {rng.choice(ADJECTIVES)} {rng.choice(COLOURS)} {noun}"
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.choice(DESCRIBE)} {phrase} {rng.choice(PREPOSITIONS)} the {rng.choice(OBJECTS)}."
    if kind == 1:
        return f"The {rng.choice(ANIMALS + PEOPLE)} {rng.choice(VERBS)} {rng.choice(PREPOSITIONS)} {phrase}."
    if kind == 2:
        return rng.choice(QUESTIONS).format(noun=rng.choice(OBJECTS), animal=rng.choice(ANIMALS))
    if kind == 3:
        return f"There are {rng.choice(NUMBERS)} {rng.choice(OBJECTS + ANIMALS)}s in the {rng.choice(PLACES)}."
    return f"{phrase.capitalize()} can be seen at the {rng.choice(PLACES)} of the image."


def _corpus(n_paragraphs: int = 10000) -> list[str]:
    """Seeded paragraphs of one to four sentences each."""
    rng = random.Random(SEED)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(1, 4))) for _ in range(n_paragraphs)]


def _train_tokenizer() -> Tokenizer:
    """Byte-level BPE with the Qwen special tokens at ids 0..7."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _not_text(tok: Tokenizer) -> list[int]:
    """Byte tokens that decode to a partial UTF-8 sequence or a control character.

    The English corpus never uses them, but random weights would emit them, and
    engines legitimately differ in how they detokenize an unfinished character
    (HF emits U+FFFD, vLLM holds the bytes back): output texts would differ
    for a reason that is not a parity bug.
    """
    special = set(SPECIAL_TOKENS)
    return [
        i for i in range(tok.get_vocab_size())
        if tok.id_to_token(i) not in special
        and any(ch == "\ufffd" or ord(ch) < 32 or ord(ch) == 127 for ch in tok.decode([i]))
    ]


def _config(tokenizer_size: int, token_ids: dict[str, int]) -> Qwen2VLConfig:
    """The architecture: head_dim 64 on both towers, which vLLM's CPU attention supports.

    The output head is untied from the embeddings: tied, the N(0, 1) embeddings
    would make logits so large that float32 rounding dominates the comparison.
    """
    from transformers import Qwen2VLConfig

    vocab_size = math.ceil(tokenizer_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": 128,
            "num_heads": 1,
            "mlp_ratio": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


@torch.no_grad()
def _redraw(model: torch.nn.Module, tokenizer_size: int, never_emitted: list[int]) -> None:
    """Replace the default init so outputs are peaky and depend on the image.

    The default scale gives near-uniform logits, where greedy decoding flips on
    rounding noise. Biases and norm scales are redrawn too, so an engine that
    dropped them would not match by accident. Output rows that are zero give a
    logit of 0, far below the top one, so greedy decoding never emits them:
    the padding rows past the tokenizer (ids with no text), the vision
    tokens (a generated `<|image_pad|>` would break re-scoring the sequence),
    and byte tokens that are not text on their own (see `_not_text`).
    """
    for name, param in model.named_parameters():
        if "embed_tokens" in name:
            param.normal_(0.0, EMBED_STD)
            param[tokenizer_size:] = 0.0
        elif param.dim() > 1 or name.endswith("bias"):
            param.normal_(0.0, WEIGHT_STD)
        else:
            param.normal_(1.0, WEIGHT_STD)
    model.lm_head.weight[tokenizer_size:] = 0.0
    model.lm_head.weight[never_emitted] = 0.0


def build(out_dir: Path) -> None:
    """Write the tiny model, tokenizer and processor to `out_dir` with `save_pretrained`.

    transformers is imported here, not at module level, so that `recipe_hash`
    stays cheap when the model is already cached. Needs an importable
    torchvision: Qwen2VLProcessor requires its video processor.
    """
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out_dir = Path(out_dir)
    raw = _train_tokenizer()
    token_ids = {t: raw.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    # Small images keep the vision tower's work tiny: 56x56 to 112x112 pixels.
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2),
        chat_template=CHAT_TEMPLATE,
    )

    config = _config(len(tokenizer), token_ids)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(SEED)
        model = Qwen2VLForConditionalGeneration(config).to(torch.float32).eval()
        _redraw(model, len(tokenizer), [token_ids[t] for t in VISION_TOKENS] + _not_text(raw))
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        pad_token_id=token_ids["<|endoftext|>"],
        do_sample=False,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
