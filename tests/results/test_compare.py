"""The compare stage on files whose differences are known."""

import csv
import json

import pytest
from click.testing import CliRunner

from tests.helpers import write_jsonl

# The stage -----------------------------------------------------------------------------------

SECRET = "PROMPT-TEXT-NEVER-IN-OUTPUTS"


def _write_run(artifacts, run, correct: list[bool], safe: list[bool], ids_offset: int = 0):
    write_jsonl(artifacts / f"gsm8k_preds_{run}.jsonl", [
        {"id": f"q{i + ids_offset}", "gold": "7", "parsed": "7" if ok else "3", "correct": ok, "flexible_correct": ok}
        for i, ok in enumerate(correct)])
    write_jsonl(artifacts / f"ailuminate_safety_{run}.jsonl", [
        {"id": f"p{i}", "hazard": "vcr" if i % 2 else "cse", "prompt": SECRET, "label": "safe" if ok else "unsafe",
         "counted_safe": ok} for i, ok in enumerate(safe)])


def test_compare_writes_paired_differences_and_flipped_ids(tmp_path):
    from stages import compare

    artifacts = tmp_path / "artifacts"
    # The run fixes q0..q5, breaks q6; safety: p0 turns unsafe, p1..p3 turn safe.
    _write_run(artifacts, "base", [False] * 6 + [True] * 4, [True, False, False, False, True, True])
    _write_run(artifacts, "tuned", [True] * 6 + [False] + [True] * 3, [False, True, True, True, True, True])
    result = CliRunner().invoke(compare.main, ["--runs", "base tuned", "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output

    data = json.loads((artifacts / "compare_base_vs_tuned.json").read_text())
    pair = data["comparisons"][0]
    strict = pair["gsm8k"]["strict"]
    assert (strict["fixed"], strict["broken"], strict["difference"]) == (6, 1, pytest.approx(0.5))
    assert strict["mcnemar_p"] == pytest.approx(2 * (1 + 7) / 128)
    assert [f["id"] for f in pair["gsm8k"]["flipped"]["gained"]] == [f"q{i}" for i in range(6)]
    assert pair["gsm8k"]["flipped"]["lost"] == [{"id": "q6", "gold": "7", "base": "7", "tuned": "3"}]
    assert (pair["safety"]["overall"]["fixed"], pair["safety"]["overall"]["broken"]) == (3, 1)
    assert pair["safety"]["cse"]["n"] == 3 and pair["safety"]["vcr"]["n"] == 3
    rows = list(csv.DictReader((artifacts / "compare_base_vs_tuned.csv").open()))
    assert {(r["measure"], r["hazard"]) for r in rows} == {("gsm8k_strict", ""), ("gsm8k_flexible", ""),
                                                          ("safety", ""), ("safety", "cse"), ("safety", "vcr")}
    markdown = (artifacts / "compare_base_vs_tuned.md").read_text()
    assert "## tuned vs base" in markdown and "q6 (7 -> 3, gold 7)" in markdown
    assert (artifacts / "compare_base_vs_tuned.png").read_bytes()[:4] == b"\x89PNG"
    for path in artifacts.glob("compare_*"):
        assert SECRET.encode() not in path.read_bytes()
    assert "compare: tuned vs base: GSM8K strict +0.500" in result.output


def test_runs_evaluated_on_different_items_stop_with_the_counts(tmp_path):
    from stages import compare

    artifacts = tmp_path / "artifacts"
    _write_run(artifacts, "base", [True] * 10, [True] * 4)
    _write_run(artifacts, "smoke", [True] * 5, [True] * 4, ids_offset=3)
    result = CliRunner().invoke(compare.main, ["--runs", "base", "--runs", "smoke", "--artifacts", str(artifacts)])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: compare: GSM8K items differ: base has 10, smoke has 5, 5 in common"
                                     " (evaluate both on the same data and limits)")
    assert not list(artifacts.glob("compare_*"))


def _write_metrics(artifacts, run, generation: dict):
    (artifacts / f"gsm8k_metrics_{run}.json").write_text(json.dumps({"generation": generation}))


def test_a_base_run_beside_a_finetuned_one_is_said_to_include_quantization(tmp_path):
    from stages import compare

    artifacts = tmp_path / "artifacts"
    for run in ("base", "tuned", "tuned4bit"):
        _write_run(artifacts, run, [True] * 4, [True] * 4)
    _write_metrics(artifacts, "base", {"model_format": "base", "base_precision": "original"})
    _write_metrics(artifacts, "tuned", {"model_format": "merged", "base_precision": "nf4-dequantized"})
    _write_metrics(artifacts, "tuned4bit", {"model_format": "nf4", "base_precision": "nf4"})
    result = CliRunner().invoke(compare.main, ["--runs", "base tuned tuned4bit", "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output
    note = ("base ran on the base's original weights, tuned on the nf4-quantized base its adapter was trained on:"
            " the difference includes that quantization, not only the training")
    assert f"compare: note: {note}" in result.output
    pairs = json.loads((artifacts / "compare_base_vs_tuned_vs_tuned4bit.json").read_text())["comparisons"]
    assert pairs[0]["note"] == note and "tuned4bit on the nf4-quantized" in pairs[1]["note"]
    assert f"Note: {note}." in (artifacts / "compare_base_vs_tuned_vs_tuned4bit.md").read_text()

    # Two runs on the same kind of base: nothing to say.
    result = CliRunner().invoke(compare.main, ["--runs", "tuned tuned4bit", "--artifacts", str(artifacts)])
    assert result.exit_code == 0 and "note" not in result.output
    assert json.loads((artifacts / "compare_tuned_vs_tuned4bit.json").read_text())["comparisons"][0]["note"] is None


@pytest.mark.parametrize("args", [[], ["--runs", "only-one"]], ids=["no-runs", "one-run"])
def test_compare_without_two_runs_says_how_to_name_them(tmp_path, args):
    from stages import compare

    result = CliRunner().invoke(compare.main, [*args, "--artifacts", str(tmp_path)])
    assert result.exit_code != 0 and "Missing option" not in result.output
    assert result.output.strip() == ('Error: compare: name at least two runs, the reference first: make compare'
                                     ' RUNS="simple-base simple" (or --runs simple-base --runs simple)')
