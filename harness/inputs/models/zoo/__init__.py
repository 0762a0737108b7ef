"""The built-in architectures: one module per architecture, each exporting `RECIPES` (see `recipe.Recipe`).

Adding an architecture is a module here and its name in `MODULES`; the registry, `vlm-parity models`, the
zoo run and the tests take every recipe from `RECIPES`.
"""
from __future__ import annotations

import importlib

from harness.inputs.models.recipe import Recipe

MODULES = ("qwen2_vl", "lfm2_vl", "llava", "idefics3", "gemma3", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe",
           "llava_next", "llava_onevision", "internvl", "mistral3", "llama4",
           "smolvlm", "glm4v", "cohere2_vision")

RECIPES: tuple[Recipe, ...] = tuple(
    recipe for module in MODULES for recipe in importlib.import_module(f"{__name__}.{module}").RECIPES)
