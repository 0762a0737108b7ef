"""The one result schema shared by every engine, comparator and report.

Engines produce `EngineOutput`; comparators turn two of them into a
`CaseComparison`; the runner wraps both in a `CaseResult`; a run is a
`RunResult`. Everything is plain data that round-trips through JSON, so a
report can be re-rendered from `results.json` with no engine installed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1

VERDICTS = ("pass", "fail", "error")


@dataclass
class TokenLogprobs:
    """Logprob of the token actually at a position, plus the top-k there.

    `top` is keyed by token id (as (id, logprob) pairs, best first) because
    engines disagree on decoded strings but not on ids.
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenLogprobs:
        return cls(int(d["token_id"]), float(d["logprob"]), [(int(i), float(v)) for i, v in d["top"]])


@dataclass
class EngineOutput:
    """What any engine computed for one case.

    `prompt_logprobs[i]` scores `prompt_ids[i]` given the tokens before it;
    position 0 has nothing before it and is None.
    """

    case_id: str
    engine: str
    prompt_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs | None] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[TokenLogprobs] = field(default_factory=list)
    output_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineOutput:
        return cls(
            case_id=d["case_id"],
            engine=d["engine"],
            prompt_ids=list(d.get("prompt_ids", [])),
            prompt_logprobs=[None if p is None else TokenLogprobs.from_dict(p) for p in d.get("prompt_logprobs", [])],
            output_ids=list(d.get("output_ids", [])),
            output_logprobs=[TokenLogprobs.from_dict(p) for p in d.get("output_logprobs", [])],
            output_text=d.get("output_text", ""),
            timings=dict(d.get("timings", {})),
            error=d.get("error"),
        )

    @classmethod
    def failed(cls, case_id: str, engine: str, error: str) -> EngineOutput:
        return cls(case_id=case_id, engine=engine, error=error)


@dataclass
class CaseComparison:
    """Every metric of DESIGN.md for one case; None where it cannot be computed."""

    prompt_ids_match: bool
    prompt_len_reference: int
    prompt_len_engine: int
    image_positions: int = 0
    prefill_max: float | None = None
    prefill_mean: float | None = None
    prefill_p99: float | None = None
    prefill_max_image: float | None = None
    prefill_max_text: float | None = None
    prefill_topk_overlap: float | None = None
    # Per prompt position |engine - reference| (None at position 0) and whether
    # that position is inside an image placeholder span: the report charts these.
    prefill_diffs: list[float | None] = field(default_factory=list)
    image_mask: list[bool] = field(default_factory=list)
    decode_len: int = 0
    decode_common_prefix: int = 0
    first_divergence: int | None = None
    decode_max: float | None = None
    decode_mean: float | None = None
    divergence_in_topk: bool | None = None
    rouge_l: float | None = None
    # Structural gaps (a side returned fewer logprobs than tokens): always a failure.
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseComparison:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class DecodeEffect:
    """The same case with the engine fed another decoder's pixels (the reference
    keeps PIL's): what a decode-path difference does to parity."""

    decoder: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    comparison: CaseComparison | None = None
    # Per image: decoder info, image facts, findings, px_* statistics, heatmap data URL.
    pixel_deltas: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodeEffect:
        return cls(d["decoder"], d["verdict"], list(d.get("reasons", [])),
                   CaseComparison.from_dict(d["comparison"]) if d.get("comparison") else None,
                   list(d.get("pixel_deltas", [])))


@dataclass
class CaseResult:
    """One case's verdict with the reasons for it and everything behind it."""

    case_id: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    source: str = ""
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    prompt_text: str = ""
    thresholds: dict[str, Any] = field(default_factory=dict)
    comparison: CaseComparison | None = None
    reference: EngineOutput | None = None
    engine: EngineOutput | None = None
    # Decoded text of output tokens and top-k candidates, keyed by str(token id),
    # so the report can show tokens without a tokenizer.
    tokens: dict[str, str] = field(default_factory=dict)
    # Small data-URL thumbnails of the images, so a report needs no image files.
    thumbnails: list[str] = field(default_factory=list)
    decode_effect: DecodeEffect | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseResult:
        return cls(
            case_id=d["case_id"],
            verdict=d["verdict"],
            reasons=list(d.get("reasons", [])),
            source=d.get("source", ""),
            tags=list(d.get("tags", [])),
            images=list(d.get("images", [])),
            prompt_text=d.get("prompt_text", ""),
            thresholds=dict(d.get("thresholds", {})),
            comparison=CaseComparison.from_dict(d["comparison"]) if d.get("comparison") else None,
            reference=EngineOutput.from_dict(d["reference"]) if d.get("reference") else None,
            engine=EngineOutput.from_dict(d["engine"]) if d.get("engine") else None,
            tokens=dict(d.get("tokens", {})),
            thumbnails=list(d.get("thumbnails", [])),
            decode_effect=DecodeEffect.from_dict(d["decode_effect"]) if d.get("decode_effect") else None,
        )


@dataclass
class RunResult:
    """A whole run: provenance, per-case results and how the run itself ended.

    `status` is "running" while cases are still being written, "complete" when
    every case has a result, and "failed" when the run itself broke (`error`).
    """

    provenance: dict[str, Any] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.cases) for v in VERDICTS}

    @property
    def verdict(self) -> str:
        """error if the run broke, did not finish or had no case; fail if any case did not pass."""
        if self.status != "complete" or self.error or not self.cases:
            return "error"
        return "pass" if all(c.verdict == "pass" for c in self.cases) else "fail"

    def case(self, case_id: str) -> CaseResult:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results schema_version {version!r} is not {SCHEMA_VERSION}")
        return cls(
            provenance=dict(d.get("provenance", {})),
            cases=[CaseResult.from_dict(c) for c in d.get("cases", [])],
            status=d.get("status", "running"),
            error=d.get("error"),
            schema_version=version,
        )
