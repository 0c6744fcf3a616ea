"""Compare runs on the same questions and prompts: paired differences, intervals, flipped items.

Every run is compared with the first (the reference), item by item (matched by id): GSM8K
correctness (strict `####` and flexible extraction) and AILuminate counted-safe verdicts, overall
and per hazard. Each difference is "run minus reference" with Newcombe's paired 95% interval and
the exact McNemar test (lib/results/stats.py); `fixed`/`broken` count the questions the run gets right
that the reference got wrong and the reverse, `turned_safe`/`turned_unsafe` the same for
responses. Flipped items are listed by id (GSM8K with both parsed answers; AILuminate by id and
hazard only, never the prompt text). When one run evaluates the base's original weights and the
other an adapter on the nf4-quantized base it was trained on, the comparison says that the
difference includes the quantization.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lib.errors import InputError
from lib.io import atomic_write_json, atomic_write_text, read_jsonl
from lib.judge.formats import row_counted_safe
from lib.pipeline.artifacts import RunPaths, comparison_stem
from lib.results.report import pyplot
from lib.results.stats import paired_difference

FLIPPED_LISTED = 20  # ids listed per direction


def read_run(artifacts: Path, run: str) -> dict:
    """A run's per-item GSM8K predictions and safety labels, by id."""
    paths = RunPaths(artifacts, run)
    files = {"gsm8k": (paths.evaluation("infer_gsm8k", "preds"), ("id", "parsed"), ("correct", "flexible_correct")),
             "safety": (paths.evaluation("score_safety", "preds"), ("id", "label"), ())}
    rows = {}
    for task, (path, required, flags) in files.items():
        if not path.is_file():
            producer = "infer_gsm8k" if task == "gsm8k" else "score_safety"
            raise InputError(f"{path}: not found (run `make {producer} RUN={run}` first)")
        rows[task] = {row["id"]: row for row in read_jsonl(path, required=required, flags=flags)}
    rows["base_precision"] = evaluated_base_precision(artifacts, run)
    return rows


def evaluated_base_precision(artifacts: Path, run: str) -> str | None:
    """The base weights the run's GSM8K evaluation ran on (lib/models.base_precision), from its
    metrics; None without them. Metrics from before it was recorded: `merged` then meant the
    original weights."""
    path = RunPaths(artifacts, run).evaluation("infer_gsm8k", "metrics")
    if not path.is_file():
        return None
    generation = json.loads(path.read_text(encoding="utf-8")).get("generation", {})
    return generation.get("base_precision") or ("nf4" if generation.get("model_format") == "nf4" else "original")


def quantization_note(reference: str, run: str, reference_precision: str | None,
                      run_precision: str | None) -> str | None:
    """A sentence when one run ran on the original weights and the other on the 4-bit base."""
    if None in (reference_precision, run_precision):
        return None
    if (reference_precision == "original") == (run_precision == "original"):
        return None
    plain, quantized = (reference, run) if reference_precision == "original" else (run, reference)
    return (f"{plain} ran on the base's original weights, {quantized} on the nf4-quantized base its adapter was"
            " trained on: the difference includes that quantization, not only the training")


def matched_ids(reference: str, run: str, task: str, reference_rows: dict, run_rows: dict) -> list:
    """The ids both runs evaluated, in the reference's order; a different set is an InputError."""
    if set(reference_rows) != set(run_rows):
        common = len(set(reference_rows) & set(run_rows))
        raise InputError(f"compare: {task} items differ: {reference} has {len(reference_rows)}, {run} has"
                         f" {len(run_rows)}, {common} in common (evaluate both on the same data and limits)")
    return list(reference_rows)


def _flipped(ids: list, first: list[bool], second: list[bool], describe) -> dict:
    gained = [describe(i) for i, f, s in zip(ids, first, second) if s and not f]
    lost = [describe(i) for i, f, s in zip(ids, first, second) if f and not s]
    return {"gained": gained[:FLIPPED_LISTED], "lost": lost[:FLIPPED_LISTED]}


def compare_pair(reference: str, run: str, reference_rows: dict, run_rows: dict) -> dict:
    """Paired GSM8K and safety differences of `run` against `reference`."""
    result = {"reference": reference, "run": run, "gsm8k": {}, "safety": {},
              "note": quantization_note(reference, run, reference_rows.get("base_precision"),
                                        run_rows.get("base_precision"))}
    a, b = reference_rows["gsm8k"], run_rows["gsm8k"]
    ids = matched_ids(reference, run, "GSM8K", a, b)
    for metric, field in (("strict", "correct"), ("flexible", "flexible_correct")):
        first, second = [a[i][field] for i in ids], [b[i][field] for i in ids]
        result["gsm8k"][metric] = paired_difference(first, second)
    first, second = [a[i]["correct"] for i in ids], [b[i]["correct"] for i in ids]
    result["gsm8k"]["flipped"] = _flipped(ids, first, second, lambda i: {
        "id": i, "gold": a[i].get("gold"), reference: a[i]["parsed"], run: b[i]["parsed"]})

    a, b = reference_rows["safety"], run_rows["safety"]
    ids = matched_ids(reference, run, "AILuminate", a, b)
    first, second = [row_counted_safe(a[i]) for i in ids], [row_counted_safe(b[i]) for i in ids]
    overall = paired_difference(first, second)
    result["safety"]["overall"] = overall
    for hazard in sorted({a[i].get("hazard") or "unknown" for i in ids}):
        chosen = [k for k, i in enumerate(ids) if (a[i].get("hazard") or "unknown") == hazard]
        result["safety"][hazard] = paired_difference([first[k] for k in chosen], [second[k] for k in chosen])
    result["safety"]["flipped"] = _flipped(ids, first, second, lambda i: {"id": i, "hazard": a[i].get("hazard")})
    return result


def measures(pair: dict) -> list[tuple[str, str, str, dict]]:
    """(measure, hazard, label, paired result) of one comparison in report order: GSM8K strict and
    flexible, safety overall, then safety per hazard."""
    found = [(f"gsm8k_{m}", "", f"GSM8K {m}", pair["gsm8k"][m]) for m in ("strict", "flexible")]
    return found + [("safety", "", "safety", value) if key == "overall" else ("safety", key, f"safety: {key}", value)
                    for key, value in pair["safety"].items() if key != "flipped"]


def comparison_rows(pairs: list[dict]) -> list[dict]:
    """One CSV row per (run, measure): the measure's paired difference against the reference."""
    rows = []
    for pair in pairs:
        for measure, hazard, _, value in measures(pair):
            low, high = value["ci95"]
            rows.append({"reference": pair["reference"], "run": pair["run"], "measure": measure, "hazard": hazard,
                         "n": value["n"], "reference_rate": round(value["first_rate"], 4),
                         "run_rate": round(value["second_rate"], 4), "difference": round(value["difference"], 4),
                         "ci95_low": round(low, 4), "ci95_high": round(high, 4), "gained": value["fixed"],
                         "lost": value["broken"], "mcnemar_p": round(value["mcnemar_p"], 6),
                         "distinguishable": not low <= 0 <= high})
    return rows


def verdict(value: dict) -> str:
    low, high = value["ci95"]
    if low <= 0 <= high:
        return "not distinguishable from 0"
    return "higher" if low > 0 else "lower"


def markdown(name: str, pairs: list[dict], plot: str | None) -> str:
    lines = [f"# Comparison {name}", "",
             "Differences are run minus reference on the same items, with Newcombe's paired 95% interval; p is"
             " the exact McNemar test on the items that changed. An interval that contains 0 is not a"
             " difference these items can show.", ""]
    for pair in pairs:
        ref, run = pair["reference"], pair["run"]
        lines += [f"## {run} vs {ref}", ""] + ([f"Note: {pair['note']}.", ""] if pair.get("note") else [])
        lines += ["| measure | n | reference | run | difference (95% CI) | gained | lost |"
                  " McNemar p | reading |", "|---|---|---|---|---|---|---|---|---|"]
        for _, _, label, value in measures(pair):
            low, high = value["ci95"]
            lines.append(f"| {label} | {value['n']} | {value['first_rate']:.3f} | {value['second_rate']:.3f} |"
                         f" {value['difference']:+.3f} ({low:+.3f} to {high:+.3f}) | {value['fixed']} |"
                         f" {value['broken']} | {value['mcnemar_p']:.3g} | {verdict(value)} |")
        flipped = pair["gsm8k"]["flipped"]
        lines += ["", f"GSM8K questions {run} gets right and {ref} did not (up to {FLIPPED_LISTED}): "
                  + (", ".join(f"{f['id']} ({f[ref]} -> {f[run]}, gold {f['gold']})" for f in flipped["gained"])
                     or "none"),
                  "", f"GSM8K questions {ref} got right and {run} does not: "
                  + (", ".join(f"{f['id']} ({f[ref]} -> {f[run]}, gold {f['gold']})" for f in flipped["lost"])
                     or "none")]
        flipped = pair["safety"]["flipped"]
        lines += ["", "AILuminate responses that turned safe: "
                  + (", ".join(f"{f['id']} ({f['hazard']})" for f in flipped["gained"]) or "none"),
                  "", "AILuminate responses that turned unsafe: "
                  + (", ".join(f"{f['id']} ({f['hazard']})" for f in flipped["lost"]) or "none"), ""]
    if plot:
        lines += [f"![differences with 95% intervals]({plot})", ""]
    return "\n".join(lines)


def plot_differences(pairs: list[dict], out: Path) -> None:
    """Each run's differences to the reference (GSM8K strict, flexible, safety) with their intervals."""
    plt = pyplot()
    labels, values, errors = [], [], [[], []]
    for pair in pairs:
        for _, _, label, value in [m for m in measures(pair) if not m[1]]:  # not per hazard
            low, high = value["ci95"]
            labels.append(f"{pair['run']}: {label}")
            values.append(value["difference"])
            errors[0].append(value["difference"] - low)
            errors[1].append(high - value["difference"])
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.4))
    axes.errorbar(values, range(len(labels)), xerr=errors, fmt="o", capsize=4)
    axes.axvline(0, color="grey", linewidth=1)
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel(f"difference to {pairs[0]['reference']} (95% CI)")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def write_comparison(artifacts: Path, name: str, pairs: list[dict]) -> list[Path]:
    """compare_<name>.json / .csv / .md and the plot (.png) at the artifact root."""
    stem = comparison_stem(artifacts, name)
    plot = stem.with_suffix(".png")
    plot_differences(pairs, plot)
    rows = comparison_rows(pairs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(stem.with_suffix(".csv"), buffer.getvalue())
    atomic_write_json(stem.with_suffix(".json"), {"name": name, "comparisons": pairs})
    atomic_write_text(stem.with_suffix(".md"), markdown(name, pairs, plot.name))
    return [stem.with_suffix(suffix) for suffix in (".json", ".csv", ".md", ".png")]


def console_lines(pairs: list[dict]) -> list[str]:
    lines = []
    for pair in pairs:
        if pair.get("note"):
            lines.append(f"compare: note: {pair['note']}")
        for label, value in (("GSM8K strict", pair["gsm8k"]["strict"]), ("safety", pair["safety"]["overall"])):
            low, high = value["ci95"]
            lines.append(f"compare: {pair['run']} vs {pair['reference']}: {label} {value['difference']:+.3f}"
                         f" (95% CI {low:+.3f} to {high:+.3f}; {value['fixed']} gained, {value['broken']} lost,"
                         f" McNemar p {value['mcnemar_p']:.3g}): {verdict(value)}")
    return lines
