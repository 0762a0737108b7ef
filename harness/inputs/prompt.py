"""Prompt rendering with the reference's processor: every engine on the "rendered"
prompt form gets this text, and the report turns token ids back into text with it."""
from __future__ import annotations

from collections.abc import Iterable

from harness.core.schema import EngineOutput
from harness.inputs.cases import Case


class Prompter:
    """The reference's processor, loaded once per run."""

    def __init__(self, model: str) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model)
        self.chat_template: str | None = getattr(self.processor, "chat_template", None)

    def render(self, case: Case) -> str:
        return self.processor.apply_chat_template(list(case.messages), tokenize=False, add_generation_prompt=True)

    def token_texts(self, outputs: list[EngineOutput]) -> dict[str, str]:
        """Text of every output token and every top-k candidate, keyed by id."""
        return {str(i): self.processor.decode([i]) for i in shown_token_ids(outputs)}


def shown_token_ids(outputs: Iterable[EngineOutput]) -> list[int]:
    """The ids the report shows as text: every output token and every top-k candidate."""
    outputs = list(outputs)
    ids = {t for o in outputs for t in o.output_ids}
    ids |= {t for o in outputs for step in o.output_logprobs for t, _ in step.top}
    return sorted(ids)
