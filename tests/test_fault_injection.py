"""Each variant catches the real engine bug on its own path, and only that variant does.

Real engine bug classes are injected into vLLM itself (tests/faulty_vllm.py
patches vLLM code paths inside the engine process); the reference stays
HF on the built-in tiny Qwen2-VL. Each test runs the variant whose path the
fault lives on next to the base variant and at least one other, and checks
that the fault shows up as that variant's verdict and reasons while the
others of the same run pass. Faults whose paths no other variant of the run
takes share one run (`four_faults`), with a checkpoint fault among them: a
chat template that only the engine's own rendering (`native`) reads. A run is
localized only where a test reads its ladder.

A fault that hangs the engine instead is stopped by the harness's stall
guard (`stall_s`) and shows up as errors, not as a test that never ends.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.core.schema import CaseComparison, RunResult
from harness.judging.explain import case_lines, info_lines, ladder_text, variant_lines
from harness.publish.attention import attention
from harness.repro import write_repro
from harness.runner import RunConfig, execute
from harness.publish.positions import loaded
from tests.conftest import CASES

pytestmark = pytest.mark.engine

ENGINE = "tests.faulty_vllm:FaultyVLLMEngine"
SUBSET = {"astronaut-420", "two-images", "text-only", "long-prompt-rocket"}
IMAGE_CASES = SUBSET - {"text-only"}
STALL_S = 90  # an engine that reports nothing for this long is hung (engine start is ~20 s here)
TOLERANCE = 1e-4  # the float32 prefill_max threshold; the unfaulted runs are ~2e-6


def run(model: str | Path, out: Path, fault: str | list[str], variants: list[str], only: set[str] = SUBSET,
        **options) -> RunResult:
    """One harness run with `fault` injected; an engine that hangs is stopped by the harness's stall guard."""
    config = RunConfig(cases=[CASES], out=out, engine=ENGINE, engine_options={"fault": fault}, model=str(model),
                       only=only, variants=variants, stall_s=STALL_S, **options)
    return loaded(execute(config, progress=lambda _: None), out)  # with its per-position data


def assert_wrong_from_first_image(case_id: str, cmp: CaseComparison) -> None:
    """Image embeddings that are off: exact up to the first image token, wrong on the image positions."""
    assert cmp.prompt_ids_match, case_id
    first_image = cmp.image_mask.index(True)
    assert max(d for d in cmp.prefill_diffs[:first_image + 1] if d is not None) <= TOLERANCE, case_id
    assert cmp.prefill_max_image > TOLERANCE, (case_id, cmp.prefill_max_image)


def verdicts(result: RunResult) -> dict[str, dict[str, str]]:
    return {c.case_id: {name: v.verdict for name, v in c.variants.items()} for c in result.cases}


def template_copy(model: Path, dest: Path) -> Path:
    """A copy of `model` whose chat template adds one space after the role."""
    shutil.copytree(model, dest)
    template = dest / "chat_template.jinja"
    text = template.read_text()
    assert "message['role'] + '\\n'" in text
    template.write_text(text.replace("message['role'] + '\\n'", "message['role'] + ' \\n'", 1))
    return dest


@pytest.fixture(scope="module")
def four_faults_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("four-faults")


@pytest.fixture(scope="module")
def four_faults(four_faults_dir: Path, tiny_model: str, tiny_model_dir: Path) -> RunResult:
    """Four faults on four paths in one run (none touches another's path): the sampler and image-embeds faults
    and a checkpoint whose chat template differs (read only by the native form) in one engine start,
    chunk-slice's variant in its own (its engine settings differ); one run for four tests. The reference is the
    built-in model's. The sampling errors make every case an `error`, which the default localization leaves
    alone: the image cases are localized by name, each on its first failing variant in the plan's order,
    chunked-prefill."""
    model = template_copy(tiny_model_dir, four_faults_dir / "model")
    result = run(model, four_faults_dir / "out", ["sampler", "image-embeds", "chunk-slice"],
                 ["batched", "alone", "chunked-prefill", "repeat", "image-embeds", "sampling", "native"],
                 reference_model=tiny_model, localize=",".join(sorted(IMAGE_CASES)))
    assert result.status == "complete", result.error
    assert set(verdicts(result)) == SUBSET
    return result


def test_sampler_crash_on_temperature_is_a_sampling_error_only(four_faults: RunResult) -> None:
    """Sampler.apply_temperature divides an inference tensor in place outside inference mode:
    every step with a sampled request raises; greedy steps never reach it. The sampled requests
    share the batched submissions with greedy ones, so those fail as a whole and the adapter's
    one-by-one retry must leave only the sampled requests in error."""
    message = "Inplace update to inference tensor outside InferenceMode is not allowed"
    for case in four_faults.cases:
        sampling = case.variants["sampling"]
        assert sampling.verdict == "error", (case.case_id, variant_lines(sampling))
        # Both submissions of the sampled request, with the engine's own exception, as records.
        errors = [(n.kind, n.data["attempt"], n.data["type"]) for n in sampling.notes]
        assert errors == [("engine_error", 0, "RuntimeError"), ("engine_error", 1, "RuntimeError")], errors
        assert all(n.data["message"].startswith(message) for n in sampling.notes), sampling.notes
        assert variant_lines(sampling)[0].startswith(f"engine error (attempt 1): RuntimeError: {message}")
        assert case.verdict == "error"
        # Greedy requests of the same submissions (batched, the repeats) and alone: exact.
        for name in ("batched", "alone", "repeat"):
            assert case.variants[name].verdict == "pass", (case.case_id, name, variant_lines(case.variants[name]))


def test_wrong_image_embeddings_fail_image_embeds_only(four_faults: RunResult) -> None:
    """Qwen2-VL's _process_image_input scales precomputed image_embeds by 1.05; pixels untouched."""
    for case in four_faults.cases:
        if case.case_id == "text-only":
            assert case.variants["image-embeds"].verdict == "skipped"
            assert case.variants["image-embeds"].reasons == ["the case has no images"]
            continue
        embeds = case.variants["image-embeds"]
        assert embeds.verdict == "fail", variant_lines(embeds)
        assert case.variants["batched"].verdict == case.variants["alone"].verdict == "pass"
        assert any(f.metric == "prefill_max" and f.against == "reference" for f in embeds.failing)
        assert any(f.metric == "prefill_max" and f.against == "base" for f in embeds.failing), variant_lines(embeds)
        assert_wrong_from_first_image(case.case_id, embeds.comparison)


def test_engine_template_differing_by_one_space_fails_native_only(four_faults: RunResult) -> None:
    """The engine serves a copy whose chat template adds one space after the role: the rendered form
    (the reference's template) passes, the native form (the engine's own template) fails every case
    on prompt ids, and says that the template is where it starts."""
    assert {c.case_id for c in four_faults.cases} == SUBSET
    for case in four_faults.cases:
        assert case.variants["batched"].verdict == "pass", (case.case_id, variant_lines(case.variants["batched"]))
        native = case.variants["native"]
        assert native.verdict == "fail" and native.comparison.prompt_ids_match is False, variant_lines(native)
        assert variant_lines(native)[0].startswith("vs reference: prompt_ids_match = false")
        stage = [n for n in native.notes if n.kind == "native_stage"]
        assert [n.data for n in stage] == [{"stage": "template"}], native.notes
        assert ("where it starts: prompt token ids differ: the engine's own chat template (or tokenizer) renders "
                "the prompt differently from the reference's") in info_lines(native)


def test_encoder_cache_hit_serving_a_wrong_entry_fails_repeat_only(tmp_path: Path, tiny_model: str) -> None:
    """An encoder-cache hit (an image's encoder output computed for another request) is served
    scaled by 1.05. A repeat of a request in the same engine is served that way (its prompt
    logprobs keep it off the prefix cache, and the encoder-cache hit means the processor cache's
    pixels are never re-encoded). The cases' images are distinct, so the batched submission
    itself has no hit; image-embeds' embeddings hash to their own entries."""
    only = {"two-images", "coffee-444", "text-only", "long-prompt-rocket"}  # no image shared
    result = run(tiny_model, tmp_path / "out", "encoder-cache", ["batched", "repeat", "image-embeds"], only,
                 localize="off")
    assert result.status == "complete", result.error
    assert verdicts(result) == {
        **{c: {"batched": "pass", "repeat": "fail", "image-embeds": "pass"} for c in only - {"text-only"}},
        "text-only": {"batched": "pass", "repeat": "pass", "image-embeds": "skipped"},
    }
    for case in result.cases:
        repeat = case.variants["repeat"]
        if case.case_id == "text-only":
            continue
        # The second submission, sent after the first finished, is served from the cache too.
        assert any(f.metric == "prefill_max" and f.attempt == 1 and f.against == "reference"
                   for f in repeat.failing), variant_lines(repeat)
        assert_wrong_from_first_image(case.case_id, repeat.comparison)


def test_off_by_one_chunk_slice_fails_chunked_prefill_only(four_faults: RunResult, four_faults_dir: Path) -> None:
    """_gather_mm_embeddings takes the rows of an image begun in an earlier prefill chunk one row
    early. With the normal token budget no image is split: only chunked-prefill sees it (the run's other
    failing variants are the other faults' own)."""
    paths = ("batched", "alone", "chunked-prefill")
    assert {c: {v: by[v] for v in paths} for c, by in verdicts(four_faults).items()} == {
        **{c: {"batched": "pass", "alone": "pass", "chunked-prefill": "fail"} for c in IMAGE_CASES},
        "text-only": {"batched": "pass", "alone": "pass", "chunked-prefill": "pass"},
    }
    for case in four_faults.cases:
        chunked = case.variants["chunked-prefill"]
        tokens, split = chunked.details["chunk_tokens"], chunked.details["split_spans"]
        if case.case_id == "text-only":
            assert split == [] and chunked.verdict == "pass"
            continue
        assert split, f"{case.case_id}: no image span split by {tokens}-token chunks"
        lines = variant_lines(chunked)
        assert lines[0].startswith("vs reference: prefill_max = "), lines
        failing = {line.split(": ", 1)[0] for line in case_lines(case)}
        assert failing == {"chunked-prefill", "image-embeds", "sampling", "native"}, case_lines(case)
        # Exact through the first chunk; wrong from the logprob predicted at the second chunk's
        # first position, which holds an image token whose slice started past 0.
        diffs = chunked.comparison.prefill_diffs
        assert max(d for d in diffs[:tokens + 1] if d is not None) <= TOLERANCE, (case.case_id, tokens)
        assert diffs[tokens + 1] > TOLERANCE, (case.case_id, tokens, diffs[:tokens + 3])
        # Localized: the encoder's output is right, the merged embeddings of the image tokens after the
        # chunk boundary are not (the probe prefills in the variant's own chunks). Every stage before them,
        # as vLLM's own captures show it, agrees with the reference's.
        assert case.ladder is not None and case.ladder.variant == "chunked-prefill"
        assert case.ladder.first == "embeds", ladder_text(case.ladder)
        assert "image token" in next(r for r in case.ladder.rungs if r.stage == "embeds").where
        stages = [r.stage for r in case.ladder.rungs]
        assert {r.status for r in case.ladder.rungs[:stages.index("embeds")]} == {"pass"}, ladder_text(case.ladder)
    # The probes ran in processes of their own, each with its log.
    assert {p.name for p in (four_faults_dir / "out" / "logs").glob("probe-*.log")} == {"probe-engine-0.log",
                                                                                      "probe-reference.log"}


def test_in_bfloat16_healthy_paths_pass_by_their_floor_and_the_chunk_fault_still_fails(tmp_path: Path,
                                                                                    tiny_model: str) -> None:
    """The dtype engines ship: a bfloat16 engine against the float32 stored reference. The base path passes
    (its error is the bfloat16 floor's size, far past the float32 bounds), the chunk-slice bug fails."""
    only = {"astronaut-420", "two-images", "text-only"}
    result = run(tiny_model, tmp_path / "out", "chunk-slice", ["batched", "chunked-prefill"], only,
                 dtype="bfloat16", reference_dtype="float32", localize="off")
    assert result.status == "complete", result.error
    assert verdicts(result) == {**{c: {"batched": "pass", "chunked-prefill": "fail"} for c in only - {"text-only"}},
                                "text-only": {"batched": "pass", "chunked-prefill": "pass"}}
    for case in result.cases:
        batched = case.variants["batched"].comparison
        assert batched.prefill_max > 1e-2 and batched.checks["prefill_max"].floor > 1e-2  # bfloat16-sized, both
        assert case.floor.runs == {"floor-bfloat16": {"dtype": "bfloat16"},
                                   "floor-bfloat16-eager": {"dtype": "bfloat16", "attn_implementation": "eager"}}
        if case.case_id != "text-only":
            worst = max(f.ratio for f in case.variants["chunked-prefill"].failing if f.ratio is not None)
            assert worst > 10, variant_lines(case.variants["chunked-prefill"])


def test_a_cell_failed_by_an_injected_fault_reproduces_from_its_folder(four_faults: RunResult, tmp_path: Path) -> None:
    """`vlm-parity repro` on the image-embeds fault's cell: repro.py, in a fresh interpreter from the folder alone,
    runs the same engine (with its fault) and exits 1, printing where the prompt logprobs part ways."""
    from tests.test_repro import run_repro

    folder = write_repro(four_faults, "astronaut-420", "image-embeds", tmp_path / "cell")
    done = run_repro(folder, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "case astronaut-420 on image-embeds: FAIL" in done.stdout
    assert "prompt logprobs, first position past the bound" in done.stdout and "(image)" in done.stdout


def test_output_side_faults_are_each_caught_on_the_variant_that_owns_them(tmp_path: Path, tiny_model: str) -> None:
    """Six bugs between the logits and the user, in one engine (none touches another's path): n > 1 children
    that lost the image (n-best; n-sampled, its children's tokens scored by the reference), a stop string cut one
    character late (stops), a space after each special token kept in the text (special-tokens), top-k ranks
    shifted after a non-greedy sample (sampling), presence and frequency penalties counting the prompt
    (penalties), a minimum length not honoured (min-tokens). Each is caught by its variant, by the check of its
    class, while the base variant passes every case."""
    faults = ["children-without-image", "stop-offset", "special-space", "rank-shift", "penalties-over-prompt",
              "min-tokens-ignored"]
    result = run(tiny_model, tmp_path / "out", faults,
                 ["batched", "sampling", "n-best", "n-sampled", "penalties", "stops", "min-tokens", "special-tokens",
                  "special-tokens-packed"],
                 localize="off")
    assert result.status == "complete", result.error
    by_id = {c.case_id: c for c in result.cases}
    for case in result.cases:
        assert case.variants["batched"].verdict == "pass", (case.case_id, variant_lines(case.variants["batched"]))
        for name in ("special-tokens", "special-tokens-packed"):  # every answer runs past EOS: specials in text
            cell = case.variants[name]
            metrics = {f.metric for f in cell.failing}  # the same ids: only the text (and its overlap) differs
            assert cell.verdict == "fail" and "text_matches_ids" in metrics <= {"text_matches_ids", "rouge_l"}, (
                case.case_id, name, variant_lines(cell))
            assert "<|im_end|> <" in next(f.detail for f in cell.failing if f.metric == "text_matches_ids")
    for case_id in IMAGE_CASES:  # the children (the first answer among them) answered without the image
        cell = by_id[case_id].variants["n-best"]
        assert cell.verdict == "fail" and any(f.against == "reference" for f in cell.failing), variant_lines(cell)
    assert by_id["text-only"].variants["n-best"].verdict == "pass", variant_lines(by_id["text-only"].variants["n-best"])
    for case_id in IMAGE_CASES:  # sampled children without the image: their tokens scored by the reference
        cell = by_id[case_id].variants["n-sampled"]
        assert any(f.against == "scored" and f.metric.startswith("decode") for f in cell.failing), variant_lines(cell)
    stopped = by_id["astronaut-420"].variants["stops"]  # "The word dog in black.": stopped on " in "
    assert stopped.verdict == "fail" and "text_matches_ids" in {f.metric for f in stopped.failing} <= {
        "text_matches_ids", "rouge_l"}, variant_lines(stopped)
    sampled = by_id["astronaut-420"].variants["sampling"]  # samples a token of rank 4: its top-k ranks 2..6
    assert sampled.verdict == "fail" and {f.metric for f in sampled.failing} == {"logprob_ranks"}, \
        variant_lines(sampled)
    assert "ranks [2, 3, 4, 5]" in sampled.failing[0].detail
    # Its prompt's words, penalized: another answer. (A penalized choice is not the raw most likely token, so the
    # rank fault of this engine shows on it too.)
    penalized = by_id["long-prompt-rocket"].variants["penalties"]
    assert penalized.verdict == "fail" and {"first_divergence", "processed_choice", "rouge_l"} <= {
        f.metric for f in penalized.failing} <= {"first_divergence", "processed_choice", "rouge_l", "logprob_ranks"}, \
        variant_lines(penalized)
    assert "the choice was made after the logits" in next(f.detail for f in penalized.failing
                                                          if f.metric == "processed_choice")
    for case in result.cases:  # every default answer ends at EOS before 12 tokens: the engine's did, unmasked
        cell = case.variants["min-tokens"]
        assert cell.verdict == "fail" and {"first_divergence", "processed_choice"} <= {f.metric for f in cell.failing} \
            <= {"first_divergence", "processed_choice", "rouge_l"}, (case.case_id, variant_lines(cell))
    # Each is named after the logits, without a probe (the logits agree): the group's stage says where.
    stages = {g.variants: g.stage for g in attention(result) if g.level == "fail"}
    assert stages[("special-tokens", "special-tokens-packed")] == "returned", stages
    assert {stage for variants, stage in stages.items() if "penalties" in variants or "min-tokens" in variants} == {
        "returned"}, stages


@pytest.mark.parametrize("fault, metric, cases, passing", [
    ("top-p-ignored", "sampled_allowed", None, ["batched", "n-best"]),
    ("processed-logprobs", "returned_logprobs", {"astronaut-420", "text-only"}, ["batched"]),
])
def test_sampler_faults_are_caught_by_scoring_the_sampled_answers(tmp_path: Path, tiny_model: str, fault: str,
                                                                  metric: str, cases: set[str] | None,
                                                                  passing: list[str]) -> None:
    """Two bugs in how sampled answers are made, caught without the engine's random stream by the reference
    scoring each answer's tokens: a sampler that drops top-p draws tokens past the nucleus (`sampled_allowed`);
    processed logprobs returned where raw ones were asked for, vLLM #26014's class (`returned_logprobs`). Both
    sampled variants fail on that check alone, named after the logits, while the greedy ones pass (n-best, greedy
    through the sampler with top-k 1, where top-p changes nothing; its processed logprobs are 0, so the second
    fault is not run with it). Dropping top-p shows where a draw falls past the nucleus: on some case (here
    astronaut-420's first answers, by the seed), not on every one; returning processed logprobs shows on all."""
    result = run(tiny_model, tmp_path / "out", fault, [*passing, "sampling", "n-sampled"],
                 only={"astronaut-420", "text-only"}, localize="off")
    assert result.status == "complete", result.error
    failed = set()
    for case in result.cases:
        for name in passing:
            assert case.variants[name].verdict == "pass", (case.case_id, name, variant_lines(case.variants[name]))
        for name in ("sampling", "n-sampled"):
            cell = case.variants[name]
            if cell.verdict != "pass":
                assert cell.verdict == "fail" and {f.metric for f in cell.failing} == {metric}, (
                    case.case_id, name, variant_lines(cell))
                assert all(f.against == "scored" for f in cell.failing), variant_lines(cell)
                failed.add(case.case_id)
    assert failed == cases if cases is not None else failed, failed
    stages = {g.variants: g.stage for g in attention(result) if g.level == "fail"}
    assert set(stages.values()) == {"returned"}, stages


def test_logit_bias_and_grammar_faults_are_caught_on_their_variants(tmp_path: Path, tiny_model: str) -> None:
    """Two bugs in what a request does to the logits, in one engine: a logit bias landing on the next token id
    (logit-bias: the banned "The" still chosen, or another path taken) and a structured-output grammar that does
    not advance with the answer (structured-choice: every step masked as the first, so the answer never ends on
    a whole choice). Each fails its own variant, against the reference re-run under the same bias or constraint,
    named after the logits; the unbiased, unconstrained requests of the same batch pass."""
    result = run(tiny_model, tmp_path / "out", ["bias-next-token", "grammar-stale"],
                 ["batched", "logit-bias", "structured-choice"], only={"astronaut-420", "text-only"}, localize="off")
    assert result.status == "complete", result.error
    for case in result.cases:
        assert case.variants["batched"].verdict == "pass", (case.case_id, variant_lines(case.variants["batched"]))
        biased = case.variants["logit-bias"]
        assert biased.verdict == "fail" and "first_divergence" in {f.metric for f in biased.failing}, (
            case.case_id, variant_lines(biased))
        constrained = case.variants["structured-choice"]
        assert constrained.verdict == "fail" and {"first_divergence", "finish_reason"} <= {
            f.metric for f in constrained.failing}, (case.case_id, variant_lines(constrained))
        assert "the engine finished by 'length'" in next(f.detail for f in constrained.failing
                                                        if f.metric == "finish_reason")
    stages = {g.variants: g.stage for g in attention(result) if g.level == "fail"}
    assert stages == {("logit-bias",): "returned", ("structured-choice",): "returned"}, stages
