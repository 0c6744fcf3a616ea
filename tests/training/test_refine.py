"""Rejection sampling: the filter on known samples, seeded engine sampling, the refine stage on the demo."""

import json
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from lib.engine.prefix_sharing import PrefixSharingEngine
from lib.engine.sampling import Sampling
from lib.errors import InputError
from lib.tasks.gsm8k import strict_answer
from lib.training.refine import check_no_leakage, equation_path, sample_seed, select_solutions
from tests.helpers import PIN_CPU, PRESET_DIR, make_problems, write_jsonl

PROBLEM = {"id": "train-7", "question": "Tom has 4 apples and buys 7 more. How many apples does he have?",
           "answer": "He has 4+7=<<4+7=11>>11 apples.\n#### 11"}


def sample(text: str, stop_reason: str = "eos") -> dict:
    return {"text": text, "stop_reason": stop_reason, "token_ids": []}


# The filter ----------------------------------------------------------------------------------

def test_equation_path_is_the_sequence_of_normalised_equations():
    assert equation_path("First 3 x 4 = 12 eggs, then $1,200 / 12 = $100.\n#### 100") == ("3*4=12", "1200/12=100")
    assert equation_path("12 + 3 = 15") != equation_path("3 + 12 = 15")  # another path, though the same sum
    assert equation_path("He had eleven.\n#### 11") == ("no equations", "11")


def test_select_keeps_correct_distinct_samples_and_counts_each_rejection():
    samples = [
        sample("He gets 4 + 7 = 11 apples.\n#### 11"),                 # the original's path: duplicate
        sample("Tom buys 7 and has 4: 7+4 = 11.\n#### 11\nThanks!"),     # kept, cut after its answer line
        sample("7 + 4 = 11 so the answer is\n#### 11"),                 # same equations again: duplicate
        sample("4*7 = 28\n#### 28"),                                   # wrong answer
        sample("He has 11 apples."),                                   # no #### line
        sample("4 + 7 = 11, and then 11 + 0 = 11 ... 11 +", "max_new_tokens"),  # cut off
        sample("11 - 0 = 11\n#### 11"),                                # over max_per_question (1)
    ]
    rows, rejected, any_correct = select_solutions(PROBLEM, samples, max_per_question=1, keep_original=True,
                                                   strip_annotations=True)
    assert [row["source"] for row in rows] == ["gsm8k", "sample"]
    assert rows[0]["answer"] == "He has 4+7=11 apples.\n#### 11"  # annotations stripped
    assert rows[1]["answer"] == "Tom buys 7 and has 4: 7+4 = 11.\n#### 11"
    assert all(row["id"] == "train-7" and row["question"] == PROBLEM["question"] for row in rows)
    assert rejected == Counter(duplicate=2, wrong_answer=1, no_final_answer=1, cut_off=1, over_max_per_question=1)
    assert any_correct


def test_without_the_original_a_sample_on_its_path_is_kept():
    rows, rejected, _ = select_solutions(PROBLEM, [sample("4 + 7 = 11\n#### 11")], 4, keep_original=False,
                                         strip_annotations=True)
    assert [row["source"] for row in rows] == ["sample"] and not rejected


def test_a_test_or_pool_question_in_the_output_is_an_error():
    rows = [{"id": "train-1", "question": "  TOM has 4 apples and buys 7 more.  How many apples does he have?"}]
    with pytest.raises(InputError, match="out.jsonl: question 'train-1' is a GSM8K test question"):
        check_no_leakage(rows, [PROBLEM["question"]], [], "out.jsonl")
    with pytest.raises(InputError, match="few-shot pool question"):
        check_no_leakage(rows, [], [PROBLEM["question"]], "out.jsonl")
    check_no_leakage(rows, ["Another question?"], ["And another?"], "out.jsonl")


def test_sample_seeds_differ_by_question_and_sample_and_repeat_exactly():
    seeds = {sample_seed(1234, q, j) for q in ("train-1", "train-2") for j in range(3)}
    assert len(seeds) == 6 and sample_seed(1234, "train-1", 0) == sample_seed(1234, "train-1", 0)
    assert all(0 <= seed < 2 ** 63 for seed in seeds)


# Seeded sampling in the engine ---------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_parts(smollm2_dir, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompts = [smollm2_tokenizer.apply_chat_template([{"role": "user", "content": p["question"]}],
                                                     add_generation_prompt=True, return_dict=True)["input_ids"]
               for p in make_problems(4)]
    return model, smollm2_tokenizer, prompts


UNTEMPERED = Sampling(1.0, 1.0)


def _texts(model, tokenizer, prompts, seeds, batch_size, sampling=UNTEMPERED):
    engine = PrefixSharingEngine(model, tokenizer, max_new_tokens=10, batch_size=batch_size, sampling=sampling)
    return [result.token_ids for result in engine.generate(prompts, seeds=seeds)[0]]


def test_a_sample_depends_on_its_seed_not_on_its_batch_or_chunk(engine_parts):
    model, tokenizer, prompts = engine_parts
    seeds = [11, 12, 13, 14]
    together = _texts(model, tokenizer, prompts, seeds, batch_size=4)
    assert together == _texts(model, tokenizer, prompts, seeds, batch_size=4)  # reproducible
    # Two "processes" taking alternate chunks, one row at a time: the same samples.
    split = _texts(model, tokenizer, prompts[0::2], seeds[0::2], 1) + _texts(model, tokenizer, prompts[1::2],
                                                                             seeds[1::2], 1)
    assert [split[0], split[2], split[1], split[3]] == together
    # The same prompt twice with different seeds: different samples (temperature 1 on a 135M model).
    twice = _texts(model, tokenizer, [prompts[0], prompts[0]], [1, 2], batch_size=2)
    assert twice[0] != twice[1]


def test_a_tiny_nucleus_or_temperature_samples_the_greedy_answer(engine_parts):
    model, tokenizer, prompts = engine_parts
    greedy = [r.token_ids for r in PrefixSharingEngine(model, tokenizer, 10, 4).generate(prompts)[0]]
    assert _texts(model, tokenizer, prompts, [1, 2, 3, 4], 4, Sampling(1.0, top_p=1e-6)) == greedy
    assert _texts(model, tokenizer, prompts, [1, 2, 3, 4], 4, Sampling(1e-4)) == greedy


def test_sampling_needs_one_seed_per_prompt(engine_parts):
    model, tokenizer, prompts = engine_parts
    engine = PrefixSharingEngine(model, tokenizer, 4, 2, sampling=Sampling(0.7))
    with pytest.raises(ValueError, match="one seed per prompt"):
        engine.generate(prompts)


# The stage -----------------------------------------------------------------------------------

@pytest.fixture
def refine_args(tmp_path, models_dir, gsm8k_files):
    train_file, test_file = gsm8k_files
    return ["--preset", str(PRESET_DIR / "demo.yaml"), "--run", "r", "--artifacts", str(tmp_path / "artifacts"),
            "--models-dir", str(models_dir), "--set", f"data.gsm8k_train={train_file}",
            "--set", f"data.gsm8k_test={test_file}", "--set", f"fewshot.path={tmp_path / 'pool.jsonl'}",
            "--set", "refine.question_limit=4", "--set", "refine.samples_per_question=3",
            "--set", "refine.max_new_tokens=32", "--set", "refine.temperature=0.5", "--set", PIN_CPU]


def _invoke(stage_module, args):
    result = CliRunner().invoke(stage_module.main, args)
    return result


def test_refine_writes_correct_distinct_solutions_without_pool_or_test_questions(refine_args, tmp_path, gsm8k_files):
    from stages import prep_fewshot, refine

    assert _invoke(prep_fewshot, refine_args).exit_code == 0
    result = _invoke(refine, refine_args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "artifacts" / "run_r"
    output = run_dir / "gsm8k_train_self-instruct.jsonl"
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    metrics = json.loads((run_dir / "refine_metrics.json").read_text())
    train = {f"train-{i}": p for i, p in enumerate(json.loads(line)
                                                   for line in gsm8k_files[0].read_text().splitlines())}
    pool = {json.loads(line)["question"] for line in (run_dir / "fewshot.jsonl").read_text().splitlines()}
    test = {json.loads(line)["question"] for line in gsm8k_files[1].read_text().splitlines()}

    assert metrics["questions"] == 4 and metrics["samples"] == 12
    assert sum(metrics["rejected"].values()) + metrics["kept_samples"] == 12
    assert len(rows) == metrics["rows_written"] == 4 + metrics["kept_samples"]  # keep_original: one per question
    for row in rows:
        assert set(row) == {"id", "question", "answer", "source"}
        assert strict_answer(row["answer"]) == strict_answer(train[row["id"]]["answer"])  # correct by construction
        assert row["answer"].rstrip().split("\n")[-1].startswith("####")
        assert row["question"] not in pool | test
    by_question = {}
    for row in rows:
        by_question.setdefault(row["id"], []).append(equation_path(row["answer"]))
    assert all(len(paths) == len(set(paths)) for paths in by_question.values())  # no duplicate paths
    assert "refine: 4 questions x 3 samples" in result.output

    again = _invoke(refine, refine_args)  # same inputs: nothing redone
    assert again.exit_code == 0 and "up to date" in again.output
    assert output.read_text() == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_a_refined_file_you_provide_is_used_as_is(refine_args, tmp_path):
    from stages import prep_fewshot, refine

    mine = write_jsonl(tmp_path / "mine.jsonl", make_problems(3, start=300))
    before = mine.read_bytes()
    args = [*refine_args, "--set", f"data.refined_train={mine}"]
    assert _invoke(prep_fewshot, args).exit_code == 0
    result = _invoke(refine, args)
    assert result.exit_code == 0 and "your file, used as is" in result.output
    assert mine.read_bytes() == before


def test_a_training_file_holding_a_test_question_stops_refine_before_sampling(refine_args, tmp_path, gsm8k_files):
    from stages import prep_fewshot, refine

    train_file, test_file = gsm8k_files
    leaked = [json.loads(line) for line in test_file.read_text().splitlines()][:1]
    write_jsonl(train_file, make_problems(20) + leaked)
    write_jsonl(tmp_path / "pool.jsonl", make_problems(8, start=200))  # a pool given as is: the leak stays in
    args = [*refine_args, "--set", "refine.question_limit=null"]
    assert _invoke(prep_fewshot, args).exit_code == 0
    result = _invoke(refine, args)
    assert result.exit_code == 1
    assert "is a GSM8K test question" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "artifacts" / "run_r" / "gsm8k_train_self-instruct.jsonl").exists()


def test_the_run_report_shows_the_refine_yield_histogram(tmp_path):
    from lib.results.report import run_report
    from lib.training.refine import select_all

    problems = [PROBLEM, {**PROBLEM, "id": "train-8"}]
    outputs = [sample("4 + 7 = 11\n#### 11"), sample("7 + 4 = 11\n#### 11"), sample("#### 3"), sample("#### 3")]
    rows, metrics = select_all(problems, outputs, 2, max_per_question=4, keep_original=False, strip_annotations=True)
    assert metrics["kept_per_question_histogram"] == {"0": 1, "1": 0, "2": 1}
    assert len(rows) == 2 and metrics["rejected"]["wrong_answer"] == 2
    from lib.pipeline.artifacts import RunPaths

    run = RunPaths(tmp_path, "r")
    run.folder.mkdir()
    (run.folder / "refine_metrics.json").write_text(json.dumps(metrics))
    text = run_report(run, {"checkpoint": "final"}, "r: PASS", {}, {}, (0.3, 0.3))
    assert "![kept samples per question](refine_yield.png)" in text
    assert (run.folder / "refine_yield.png").read_bytes()[:4] == b"\x89PNG"
