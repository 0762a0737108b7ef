"""The stage ladder on hand-made captures (pure logic, no engine): the first stage beyond its floor is named
with where it is; a stage that cannot be compared is unavailable, never a pass."""
from __future__ import annotations

import numpy as np

from harness.core.schema import CaseResult, EngineOutput, Rung, VariantResult
from harness.engines.capture import CAPTURED
from harness.judging.explain import ladder_text, variant_lines
from harness.judging.ladder import EPS, Tolerance, ladder
from harness.localize.run import which_to_localize

IMG = 9
IDS = [1, 2, IMG, IMG, IMG, IMG, 3, 4]
TOL = Tolerance(8, EPS["float32"])


def capture(seed: int = 0, noise: float = 0.0) -> dict[str, np.ndarray]:
    """Two images of 2 feature rows each (8 encoder rows), 8 prompt positions, 2 layers."""
    rng = np.random.default_rng(0)
    jitter = np.random.default_rng(seed + 1)
    out = {"processor.image_grid_thw": np.array([1, 2, 2, 1, 2, 2]),
           "processor.patches": rng.normal(size=64), "encoder": rng.normal(size=(8, 4)) * 10,
           "features": rng.normal(size=(4, 6)) * 10, "features.rows": np.array([2, 2]),
           "embeds": rng.normal(size=(8, 6)), "positions": np.tile(np.arange(8), (3, 1)),
           "layer.0": rng.normal(size=(8, 6)), "layer.1": rng.normal(size=(8, 6)), "logits": rng.normal(size=32)}
    return {k: v + noise * jitter.normal(size=v.shape) if v.dtype.kind == "f" else v for k, v in out.items()}


def build(engine: dict[str, np.ndarray] | None, unavailable: dict[str, str] | None = None):
    return ladder("batched", capture(), engine, [capture(seed=5, noise=1e-6)], TOL, ref_ids=IDS, engine_ids=IDS,
                  media_tokens={IMG: "image"}, pixels=Rung("pixels", "pass"), unavailable=unavailable or {})


def test_a_healthy_engine_passes_every_stage() -> None:
    found = build(capture(seed=9, noise=1e-6))
    assert found.first is None and {r.status for r in found.rungs} == {"pass"}
    assert ladder_text(found, failed=False).startswith("no stage differs")


def test_the_first_stage_beyond_its_floor_is_named_with_the_image_and_rows() -> None:
    engine = capture(seed=9, noise=1e-6)
    engine["features"] = engine["features"].copy()
    engine["features"][2:] += 0.5  # image 2's rows: a projector bug
    engine["embeds"] = engine["embeds"] + 0.5  # everything after follows
    found = build(engine)
    assert found.first == "features"
    statuses = {r.stage: r.status for r in found.rungs}
    assert statuses["encoder"] == "pass" and statuses["embeds"] == "not-compared"
    rung = next(r for r in found.rungs if r.stage == "features")
    assert rung.error > rung.bound and "image 2 of 2, rows 0-1 of 2" in rung.where
    assert "first difference: image features after the projector" in ladder_text(found)


def test_positions_are_exact_per_axis_and_layers_say_which_layer_and_token() -> None:
    engine = capture(seed=9, noise=1e-6)
    engine["positions"] = engine["positions"].copy()
    engine["positions"][1:, 6:] += 2  # text after the image placed wrong on height and width
    found = build(engine)
    rung = next(r for r in found.rungs if r.stage == "positions")
    assert found.first == "positions" and "axis height, width" in rung.where and "position 6 (text token)" in rung.where
    engine = capture(seed=9, noise=1e-6)
    engine["layer.1"] = engine["layer.1"].copy()
    engine["layer.1"][3] += 1.0
    found = build(engine)
    rung = next(r for r in found.rungs if r.stage == "layers")
    assert found.first == "layers" and rung.where.startswith("layers.1 (of 2): positions 3 (first: 3, image token)")


def test_what_cannot_be_compared_is_unavailable_never_a_pass() -> None:
    engine = capture(seed=9, noise=1e-6)
    engine["processor.patches"] = (engine["processor.patches"] * 100).astype(np.int64)  # raw pixels
    del engine["processor.image_grid_thw"]
    rung = build(engine).rungs[1]
    assert rung.stage == "processor" and rung.status == "unavailable" and "integers" in rung.reason
    server = build(None, {s: "the adapter exposes no internals" for s in CAPTURED})
    inside = [r for r in server.rungs if r.stage in CAPTURED]
    assert all(r.status == "unavailable" and r.reason for r in inside) and server.first is None
    assert ladder_text(server).startswith("not localized inside the model")


def test_a_prompt_partly_served_from_the_prefix_cache_is_compared_on_what_was_computed() -> None:
    engine = capture(seed=9, noise=1e-6)
    for key in ("embeds", "layer.0", "layer.1"):
        engine[key] = engine[key][5:]
    engine["positions"] = engine["positions"][:, 5:]
    found = build(engine)
    assert found.first is None
    assert "positions 5-7" in next(r for r in found.rungs if r.stage == "embeds").reason


def test_failing_cases_are_localized_on_their_headline_or_first_failing_variant() -> None:
    def cell(name: str, verdict: str) -> VariantResult:
        return VariantResult(name, verdict, engine=EngineOutput("c", "x", prompt_ids=IDS))

    results = [CaseResult("a", "fail", variants={"batched": cell("batched", "fail"), "alone": cell("alone", "fail")},
                          headline="batched"),
               CaseResult("b", "fail", variants={"batched": cell("batched", "pass"), "alone": cell("alone", "fail")},
                          headline="batched"),
               CaseResult("c", "pass", variants={"batched": cell("batched", "pass")}, headline="batched"),
               CaseResult("d", "known", variants={"batched": cell("batched", "known")}, headline="batched")]
    assert which_to_localize(results, [], ["batched", "alone"]) == {"a": "batched", "b": "alone"}
    assert which_to_localize(results, ["c"], ["batched", "alone"])["c"] == "batched"
    assert which_to_localize(results[2:], [], ["batched"]) == {}  # a clean run probes nothing
    # Where one bug fails every case, the first ones are probed (and any asked for by id).
    assert which_to_localize(results, ["c"], ["batched", "alone"], limit=1) == {"a": "batched", "c": "batched"}


def test_a_probed_variant_says_where_in_its_failure_lines() -> None:
    """pytest's failure message, the console and the report all render the variant's lines: the ladder is one."""
    engine = capture(seed=9, noise=1e-6)
    engine["embeds"] = engine["embeds"] + 0.5
    cell = VariantResult("batched", "fail", ladder=build(engine))
    assert variant_lines(cell)[-1].startswith("where: first difference: input embeddings after merging")
    case = CaseResult("a", "fail", variants={"alone": VariantResult("alone", "pass"), "batched": cell})
    assert case.ladder is cell.ladder
