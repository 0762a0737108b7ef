"""The weight side of the tiny recipes: redrawing and saving in the layout vLLM loads.

See `redraw` for why the default init is replaced.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

SEED = 0
WEIGHT_STD = 0.08
EMBED_STD = 1.0


def redraw(
    model: torch.nn.Module,
    tokenizer_size: int,
    never_emitted: Iterable[int],
    *,
    embed_std: float = EMBED_STD,
    head_std: float | None = WEIGHT_STD,
    zero_mean_norms: Iterable[str] = (),
) -> None:
    """Replace the default init so outputs are peaky and depend on the image.

    The default scale gives near-uniform logits, where greedy decoding flips on
    rounding noise. Biases and norm scales are redrawn too, so an engine that
    dropped them would not match by accident. Output rows that are zero give a
    logit of 0, far below the top one, so greedy decoding never emits them:
    the padding rows past the tokenizer (ids with no text), the vision tokens
    (a generated image placeholder would break re-scoring the sequence), and
    byte tokens that are not text on their own (`tokenizer.not_text`).

    An untied output head is drawn again at `head_std` (None: left as drawn
    with the other weights): with unit-RMS final hidden states of width d,
    logits spread by about sqrt(d) * head_std.

    Norm scales named in `zero_mean_norms` are drawn around 0 rather than 1:
    with a tied output head the last hidden state still resembles the input
    token's embedding, so a positive final-norm scale makes every token
    predict itself; a zero-mean scale takes that bias away.
    """
    import torch

    never_emitted = list(never_emitted)
    zero_mean = set(zero_mean_norms)
    with torch.no_grad():
        _redraw(model, tokenizer_size, never_emitted, embed_std, head_std, zero_mean)


def _redraw(model: torch.nn.Module, tokenizer_size: int, never_emitted: list[int], embed_std: float,
            head_std: float | None, zero_mean: set[str]) -> None:
    for name, param in model.named_parameters():
        if "embed_tokens" in name:
            param.normal_(0.0, embed_std)
            param[tokenizer_size:] = 0.0
        elif name in zero_mean:
            param.normal_(0.0, 1.0)
        elif param.dim() > 1 or name.endswith("bias"):
            param.normal_(0.0, WEIGHT_STD)
        else:
            param.normal_(1.0, WEIGHT_STD)
    head = model.get_output_embeddings().weight  # the embeddings themselves when tied
    if head_std is not None and head.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        head.normal_(0.0, head_std)
    head[tokenizer_size:] = 0.0
    head[never_emitted] = 0.0


def draw_and_save(model_cls: type, config: object, processor: object, out_dir: Path, *, tokenizer_size: int,
                  never_emitted: list[int], bos: int, eos: list[int], pad: int,
                  renames: list[tuple[str, str]] | None = None, **redraw_options: object) -> None:
    """Draw the weights from the fixed seed (leaving the caller's RNG state alone), save model,
    plain-greedy generation config and processor, then rewrite the key prefixes vLLM needs."""
    import torch
    from transformers import GenerationConfig
    from transformers.utils import logging

    logging.disable_progress_bar()  # a build is a few files in a second: no "Writing model shards" bars
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_cls(config).to(torch.float32).eval()
        redraw(model, tokenizer_size, never_emitted, **redraw_options)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    if renames:
        rename_weight_keys(out_dir, renames)


def rename_weight_keys(out_dir: Path, renames: list[tuple[str, str]]) -> None:
    """Rewrite key prefixes in the saved safetensors file(s) in place.

    transformers 5 saves some towers in its own module layout, which vLLM 0.32
    does not load, while transformers loads the hub layout too. Only the first
    matching (old, new) prefix pair applies to a key; keys already under a
    `new` prefix are left alone, so rewriting twice changes nothing.
    """
    from safetensors.torch import load_file, save_file

    files = sorted(Path(out_dir).glob("*.safetensors"))
    if len(files) != 1:
        raise RuntimeError(f"expected one safetensors file in {out_dir}, found {len(files)}")
    path = files[0]
    tensors = load_file(path)
    renamed, changed = {}, 0
    for key, tensor in tensors.items():
        for old, new in renames:
            if key.startswith(new):  # already in the wanted layout
                break
            if key.startswith(old):
                key = new + key[len(old):]
                changed += 1
                break
        renamed[key] = tensor
    if not changed and not any(k.startswith(new) for k in renamed for _, new in renames):
        # A transformers release with yet another layout: fail here, not in vLLM.
        raise RuntimeError(f"no weight key in {path} starts with any of {[old for old, _ in renames]}")
    save_file(renamed, path, metadata={"format": "pt"})
