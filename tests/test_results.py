"""The quality section of benchmarks/RESULTS.md is generated from committed compare.json."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _generator():
    spec = importlib.util.spec_from_file_location("make_results", BENCH / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_section_matches_the_committed_comparisons():
    gen = _generator()
    text = (BENCH / "RESULTS.md").read_text()
    assert gen.updated(text, gen.render()) == text, \
        "benchmarks/RESULTS.md is stale: run python benchmarks/make_results.py"


def test_every_committed_comparison_is_in_the_quality_section():
    section = _generator().render()
    for path in (BENCH / "compare").glob("*/compare.json"):
        assert f"### {path.parent.name}" in section and "**" not in section
