"""The harness at an engine team's size, with no model: `vlm-parity bench --parts scale`.

A synthetic engine and reference (`SyntheticEngine`, run in the harness's process: `harness.engines.inline`)
answer every request with outputs of realistic size: `positions` prompt positions (an image span of
placeholders in most of them, as a 1280x960 photo makes in Qwen2.5-VL), top-k 5, 16 output tokens. The
reference's values come from the case; the engine adds noise of a floor's size, and a drift past the bound on
every `drift_every`-th case, so a run has failing cells whose per-position data the report embeds. What is
measured is then the harness's own work at that size: planning, spooling, judging, the store and results,
the report, the shards' merge and the gate, each in a fresh process (`harness.bench.measure`).
"""
from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.core.schema import Completion, EngineOutput, Scores, TokenLogprobs
from harness.engines.base import Capabilities, Engine, EngineSettings, Request
from harness.engines.features import FEATURES

ENGINE = "harness.bench.scale:SyntheticEngine"
# The twelve paths the scale runs take: the default profile's that need no engine-side text.
VARIANTS = ("batched", "alone", "chunked-prefill", "repeat", "image-embeds", "sampling", "native", "prefix-cache",
            "prefix-hit", "processor-options", "reject-then-reuse", "processor-output")
TOP_K = 5
OUTPUT_TOKENS = 16
IMAGE = "cases/images/astronaut_420.jpg"  # every case shows it: decoding and thumbnails cost what they cost


class SyntheticEngine(Engine):
    """Outputs of realistic size from a seeded generator: the same for the reference and the engine but for
    the engine's noise (`noise`) and drift (`drift` on every `drift_every`-th case); a floor run adds noise of
    1e-6. Options (`--engine-option`): positions (default `size`), noise, drift, drift_every, image_token (default:
    the model's), vocab."""

    name = "synthetic"
    capabilities = Capabilities(
        max_top_k=20, prompt_forms=frozenset({"rendered", "native"}),
        image_inputs=frozenset({"pixels", "embeddings", "bytes", "processor"}), features=frozenset(FEATURES),
        overrides=frozenset({"dtype", "attn_implementation"}),
        request_fields=frozenset({"mm_kwargs", "prompt_logprobs", "warmup", "n"}))

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        options = settings.options
        self.positions = int(options.get("positions", SyntheticEngine.size))
        self.noise = float(options.get("noise", 0.0))
        self.drift = float(options.get("drift", 0.5))
        self.drift_every = int(options.get("drift_every", 0))
        self.image_token = int(options.get("image_token", _image_token(settings.model)))
        self.vocab = int(options.get("vocab", 150000))

    # Seconds every synthetic engine of this process spent making outputs: not the harness's time. (The bench
    # runs them in its probe's process, which reads this after the run.)
    seconds = 0.0
    # Prompt positions of every synthetic engine of this process, the reference's included (it gets no engine
    # options): set by `run_config`.
    size = 1500

    def run(self, requests: Sequence[Request]) -> Iterator[EngineOutput]:
        for request in requests:
            start = time.perf_counter()
            output = self.output(request)
            SyntheticEngine.seconds += time.perf_counter() - start
            yield output

    def output(self, request: Request) -> EngineOutput:
        case = int(hashlib.sha256(request.case_id.encode()).hexdigest()[:8], 16)
        base = np.random.default_rng(case)
        n = self.positions
        ids = base.integers(0, self.vocab, n)
        ids[n // 20: n // 20 + int(n * 0.8)] = self.image_token
        logprobs = -0.01 - base.exponential(2.0, n)
        gaps = np.cumsum(base.exponential(0.7, (n, TOP_K)), axis=1)
        tail = request.case_id.rsplit("-", 1)[-1]
        index = int(tail) if tail.isdigit() else case
        # The engine's noise, and a floor run's (the reference recomputed with another dtype), of a floor's size.
        noise = self.noise or (1e-6 if request.overrides else 0.0)
        rng = np.random.default_rng([case, sum(map(ord, request.variant + repr(request.overrides)))])
        shift = noise * rng.standard_normal(n) if noise else np.zeros(n)
        if self.drift_every and index % self.drift_every == 0:
            shift = shift - self.drift
        values = logprobs + shift
        tops = values[:, None] - (gaps - gaps[:, :1])  # the token first, its own logprob
        present = np.arange(n) > 0
        prompt = Scores(present, np.where(present, ids, -1), np.where(present, values, np.nan),
                        np.where(present[:, None], ids[:, None] + np.arange(TOP_K), -1),
                        np.where(present[:, None], tops, np.nan), np.where(present, TOP_K, 0))
        id_list = ids.tolist()
        if request.prompt_logprobs is False:
            prompt = Scores()
        out_ids = [int(t) for t in base.integers(0, self.vocab, OUTPUT_TOKENS)]
        out = [TokenLogprobs(t, -0.1, [(t, -0.1), (t + 1, -2.5)]) for t in out_ids]
        text = " ".join(f"w{t}" for t in out_ids)
        children = [Completion(out_ids, out, text, "length") for _ in range(max(request.n, 1) - 1)]
        return EngineOutput(case_id=request.case_id, engine=self.name, variant=request.variant, prompt_ids=id_list,
                            prompt_logprobs=prompt, output_ids=out_ids, output_logprobs=out, output_text=text,
                            finish_reason="length", completions=children)


def _image_token(model: str) -> int:
    """The model's image placeholder id (the reference and the engine get the same model, not the same options)."""
    from harness.inputs.models import image_token_id

    found = image_token_id(model) if Path(model).is_dir() else None
    return 151655 if found is None else found


def write_cases(folder: Path, n: int) -> Path:
    """`n` cases, each one image and one question: the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / Path(IMAGE).name
    if not image.is_file():
        shutil.copyfile(IMAGE, image)
    cases = [{"id": f"scale-{i:05d}", "images": [image.name], "prompt": f"What is in this picture? ({i})",
              "max_new_tokens": OUTPUT_TOKENS, "tags": ["scale"]} for i in range(n)]
    path = folder / f"cases-{n}.yaml"
    path.write_text(yaml.safe_dump({"cases": cases}, sort_keys=False))
    return path


def run_config(cases: Path, out: Path, positions: int, model: str | None, drift_every: int = 100) -> Any:
    """The scale run: the twelve paths, the synthetic engine and reference in this process, no stage ladder
    (it would start the reference's probe), a drift on every `drift_every`-th case."""
    from harness.inputs.models import resolve_model
    from harness.run.options import RunConfig

    SyntheticEngine.size = positions
    return RunConfig(cases=[cases], out=out, model=resolve_model(model), engine=ENGINE, reference_engine=ENGINE,
                     variants=list(VARIANTS), reference="live", localize="off",
                     engine_options={"noise": 1e-6, "drift_every": drift_every})


def split_shards(results: Path, n: int, dest: Path) -> list[Path]:
    """A finished run's results cut into `n` shard folders as `--shard i/n` runs would have written them (case i
    to shard i mod n), per-position files included: what `vlm-parity merge` is measured on."""
    from dataclasses import replace

    from harness.publish.positions import PositionStore
    from harness.publish.results import read_results, write_results

    run = read_results(results)
    ids = [c.case_id for c in run.cases]
    folders = []
    for i in range(1, n + 1):
        folder = dest / f"shard-{i}"
        cases = run.cases[i - 1::n]
        shard = replace(run, cases=cases, provenance=replace(run.provenance, shard=[i, n], plan_cases=ids))
        PositionStore(folder).copy_from(PositionStore.of(results), cases)
        write_results(shard, folder)
        folders.append(folder)
    return folders


def first_paint(page: Path, timeout_s: float = 120.0, tries: int = 2) -> dict[str, float | str]:
    """The page's first contentful paint and load end in headless Chromium (Debian's, through its chromedriver:
    the report's browser test's), in seconds from navigation; the reason where it cannot be measured (a try
    that recorded no paint is tried again: once in a bench, Chromium returned before the page had loaded)."""
    measured = _paint(page, timeout_s)
    for _ in range(tries - 1):
        if "recorded no" not in str(measured.get("error", "")):
            break
        measured = _paint(page, timeout_s)
    return measured


def _paint(page: Path, timeout_s: float) -> dict[str, float | str]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return {"error": "chromium/chromedriver not installed (bootstrap.py test installs them)"}
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return {"error": "selenium not installed (the test extra)"}
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.get(page.resolve().as_uri())
            paint = driver.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [p ? p.startTime : null, n ? n.loadEventEnd : null];")
        finally:
            driver.quit()
    if paint[0] is None or not paint[1]:  # no paint recorded, or read before the load ended: not a figure
        return {"error": f"Chromium recorded no first paint, or no load end (entries {paint})"}
    return {"first_paint_s": paint[0] / 1000, "load_s": paint[1] / 1000}
