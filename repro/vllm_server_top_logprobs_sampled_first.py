"""Minimal reproduction: vLLM 0.32's OpenAI chat server returns a chosen token that is not the most likely one
inside `top_logprobs`, first, out of order, in place of the k-th most likely.

vLLM keeps each output position's logprobs as a dict whose first entry is the chosen token, then the top-k
(`vllm.logprobs.append_logprobs_for_next_position`). The chat server's `_get_top_logprobs` takes the first
`top_logprobs` items of that dict. When the chosen token is the most likely one (greedy) that is the top-k;
when it is not (a logit bias, a penalty, a constraint, a sampled token of rank > 1), the list starts with the
chosen token, is not sorted, and drops the k-th most likely token (or, when the chosen token is in the top-k, is
out of order). OpenAI's `top_logprobs` are "the most likely tokens"; the offline `LLM` returns ranks with each
entry, so its callers can sort; the chat API returns none. Found by vlm-parity's `logit-bias` variant on the
`vllm-server` engine (`logprob_ranks`: "top logprobs increase along the ranks: [-10.78, -0.0001, -11.61, ...]").

No model, no server: the server's own functions on one position's logprobs.
Run with the project venv:  .venv/bin/python repro/vllm_server_top_logprobs_sampled_first.py
Exit status: 1 while the returned top_logprobs are not the top-k in order (the bug), 0 once they are.
"""
from __future__ import annotations

import sys

from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vllm.logprobs import append_logprobs_for_next_position


def main() -> int:
    # One position: the chosen token 7 has rank 6 (a logit bias chose it); the top-5 are tokens 1..5.
    position: list = []
    top = [(1, -0.1), (2, -2.5), (3, -3.0), (4, -3.5), (5, -4.0)]
    append_logprobs_for_next_position(position, [7] + [t for t, _ in top], [-6.0] + [lp for _, lp in top],
                                      [None] * 6, rank=6, num_logprobs=5)
    served = OpenAIServingChat._get_top_logprobs(OpenAIServingChat, position[0], 5, None, True)  # type: ignore
    got = [(int(p.token.split(":")[1]), p.logprob) for p in served]
    print(f"top_logprobs served: {got}")
    print(f"the top-5:           {top}")
    if got != top:
        print("BUG: the chosen token is listed first among the top_logprobs, and the 5th most likely is missing")
        return 1
    print("OK: top_logprobs are the top-5, most likely first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
