"""The embedded default job (``rlvr train`` with no config), reduced: a smaller world, fewer steps.

It must run the whole recipe — world, tokenizer, index, expert demonstrations, the two SFT parts,
GRPO with search and its unmasked ablation, evaluation, report — and RL must raise the reward on
the training prompts. The reduced world asks one question type (birthplace) about 70 training
people; with this seed the careful SFT part learns to search and read within 150 steps (the test
EM of that part is 0.55 here), the expert's habits (70% guesses) then make the SFT policy guess,
and RL has to bring the searching back. Runs on CPU are deterministic for a seed, but how soon a
tiny model starts copying varies between seeds (in this reduced world 150–400 careful steps; at
400 steps two seeds of three learned it), so a change to the recipe may need a new reduced config.
"""

import json

import pytest

from rlvr.jobs.search_world.pipeline import format_report, load_job_config, run_job

# A smaller world and shorter stages than the bundled recipe; the same mechanism.
REDUCED = [
    "--world.num_people", "100", "--world.dev_people", "10", "--world.test_people", "20",
    "--world.question_types", "[birthplace]", "--world.vocab_size", "700",
    "--expert.p_good", "0.3", "--expert.p_guess", "0.7",
    "--sft.skill_steps", "150", "--sft.steps", "40",
    "--rollout.max_turns", "3", "--rollout.max_new_tokens", "16",
    "--run.steps", "12", "--run.eval_every", "6", "--run.progress", "false",
    "--eval.dev_limit", "20", "--eval.train_limit", "45",
]


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default_job")
    cfg = load_job_config(REDUCED, str(out))
    return out, run_job(cfg)


def test_rl_raises_reward_on_training_prompts(reduced_run):
    out, report = reduced_run
    probe = report["train_probe_em"]
    # the same 45 training questions, greedy, before and after RL
    assert probe["n"] == 45
    assert probe["after_rl"] > probe["before_rl"], probe
    # and on the rollouts themselves: the last steps' mean reward beats the first steps'
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    assert len(rewards) == 12
    assert sum(rewards[-4:]) > sum(rewards[:4]), rewards
    # by searching more: the SFT policy mostly guesses, the RL policy searches
    searches = [r["env/searches"] for r in rows if "env/searches" in r]
    assert sum(searches[-4:]) > sum(searches[:4]), searches


def test_run_directory_and_report(reduced_run):
    out, report = reduced_run
    for name in ("report.json", "metrics.jsonl", "curves.png", "config.yaml",
                 "world/corpus.jsonl", "world/test.jsonl", "index/index.json",
                 "checkpoints/sft/config.json", "sft/metrics.jsonl", "no_mask/metrics.jsonl"):
        assert (out / name).exists(), name
    assert any((out / "checkpoints").glob("step*")), list((out / "checkpoints").iterdir())
    assert any((out / "no_mask" / "checkpoints").glob("step*"))
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk["test_em"]) == {"sft_part1", "sft", "rl", "rl_no_mask"}
    for policy in ("sft", "rl", "rl_no_mask"):
        assert set(on_disk["test_em"][policy]) == {"search", "no_search"}
        assert on_disk["test"][policy]["search"]["n"] == 20  # 20 test people × 1 question
    assert on_disk["mask_observations"] is True
    assert on_disk["wall_time_s"]["total"] > 0
    # the SFT curve runs through both parts: 150 careful steps, then 40 on the habits
    sft_rows = [json.loads(x) for x in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sft_rows] == list(range(1, 191))
    # each RL curve has the SFT point (step 0) and the RL evaluations (steps 6 and 12)
    for run in (out, out / "no_mask"):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "eval/em" in r] == [0, 6, 12]
    table = format_report(report)
    for line in ("SFT, part 1 only", "SFT policy", "RL policy (grpo, masked)",
                 "RL policy (grpo, NOT masked)", "masking the retrieved tokens"):
        assert line in table, table


def test_bad_overrides_are_named():
    with pytest.raises(ValueError, match="algorithm"):
        load_job_config(["--algorithm", "dpo"])
    with pytest.raises(ValueError, match="world"):
        load_job_config(["--world.no_such_field", "1"])


def test_cli_reads_overrides_without_a_config(capsys):
    """`rlvr train --algorithm X` overrides the default job (the value is not taken for a config
    name); `rlvr train search_world` and `rlvr train default` are the same job."""
    from rlvr.cli import main

    for argv in (["train", "--algorithm", "dpo"], ["train", "default", "--algorithm", "dpo"],
                 ["train", "search_world", "--algorithm=dpo"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "algorithm 'dpo'" in err and "on-policy" in err, err
    assert main(["train", "--resume"]) == 2
    assert "always runs from the start" in capsys.readouterr().err
