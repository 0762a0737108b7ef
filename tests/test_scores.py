"""A side's prompt entries as columns (harness.core.scores.Scores): the same entries back whichever way they travel
(positions, slices, pickle, an engine process's JSON message, a stored reference's JSON, the spool's bytes): pure."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np

from harness.core.schema import EngineOutput, Scores, TokenLogprobs, from_dict, plain
from harness.run.spool import Spool


def entries(seed: int, n: int = 40) -> list[TokenLogprobs | None]:
    """Awkward entries: None inside, top-k of any length (none too), ranks with some and not others."""
    rng = random.Random(seed)
    out: list[TokenLogprobs | None] = [None]
    for _ in range(n):
        if rng.random() < 0.1:
            out.append(None)
            continue
        k = rng.choice([0, 1, 2, 5])
        top = [(rng.randint(0, 150_000), -rng.random() * 9) for _ in range(k)]
        ranks = list(range(1, k + 1)) if rng.random() < 0.5 else []
        out.append(TokenLogprobs(rng.randint(0, 150_000), -rng.random() * 9, top, ranks,
                                 rng.randint(1, 9) if rng.random() < 0.5 else None))
    return out


def test_columns_give_back_every_entry_by_position_and_by_slice() -> None:
    for seed in range(30):
        given = entries(seed)
        scores = Scores.of(given)
        assert len(scores) == len(given) and list(scores) == given and scores == given
        assert [scores[i] for i in range(len(given))] == given
        assert list(scores[5:17]) == given[5:17] and isinstance(scores[5:17], Scores)
        assert Scores.of(scores) is scores
    plain_only = [None, TokenLogprobs(3, -0.5, [(3, -0.5), (4, -1.0)])]
    assert Scores.of(plain_only).ranks is None and Scores.of(plain_only).rank is None  # nothing kept for no ranks


def test_an_output_holds_its_prompt_entries_as_columns_through_pickle_json_and_the_spool(tmp_path: Path) -> None:
    given = entries(7, 300)
    out = EngineOutput("c", "e", prompt_ids=list(range(len(given))), prompt_logprobs=given, output_ids=[1],
                       output_logprobs=[TokenLogprobs(1, -0.1, [(1, -0.1)])])
    assert isinstance(out.prompt_logprobs, Scores) and out.prompt_logprobs == given
    assert pickle.loads(pickle.dumps(out)) == out
    again = from_dict(EngineOutput, json.loads(json.dumps(plain(out))))
    assert isinstance(again.prompt_logprobs, Scores) and again == out
    sent = json.loads(json.dumps(plain(out, columns=True)))  # an engine process's message: the columns
    assert isinstance(sent["prompt_logprobs"], dict) and from_dict(EngineOutput, sent) == out
    for empty in (EngineOutput("c", "e"), EngineOutput("c", "e", prompt_logprobs=[None])):
        assert from_dict(EngineOutput, json.loads(json.dumps(plain(empty, columns=True)))) == empty
    assert json.loads(json.dumps(plain(out)))["prompt_logprobs"][1] == json.loads(json.dumps(plain(given[1])))
    spool = Spool(tmp_path, limit=0)  # every output to disk
    light = spool.put(out)
    assert light is not out and len(light.prompt_logprobs) == 0
    back = spool.full(light)
    assert back == out and np.array_equal(back.prompt_logprobs.top_ids, out.prompt_logprobs.top_ids)
    spool.close()
