"""The reward specification (verifiers and reward models in one ``reward`` mapping) and the RLHF
chain sft → rm → ppo, with the SFT model as PPO's initial policy and KL reference."""

import json
import os

import pytest
import torch

from rlvr.core.config import load_config
from rlvr.rewards.reward_model import save_reward_model, score_texts
from rlvr.rewards.spec import ModelReward, add_model_rewards, env_config, parse_reward, reward_spec
from rlvr.core.types import Task


def tiny_rm(tok, seed=0):
    from transformers import LlamaForSequenceClassification

    from rlvr.core.models import build_tiny_model

    config = build_tiny_model(tok, hidden_size=32, num_layers=1).config
    config.num_labels = 1
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config).eval()


# -- the reward mapping ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, verifiers, models", [
    ("model runs/a", {}, [ModelReward("rm", "runs/a", 1.0, "reward")]),
    ({"qa_em": 0.5, "model": "runs/a"}, {"qa_em": 0.5},
     [ModelReward("rm", "runs/a", 1.0, "reward.model")]),
    ({"qa_em": 1, "help": {"model": "runs/h", "weight": 0.25}, "safe": "model runs/s"},
     {"qa_em": 1.0}, [ModelReward("help", "runs/h", 0.25, "reward.help.model"),
                      ModelReward("safe", "runs/s", 1.0, "reward.safe")]),
    ({"help": {"model": "runs/h"}}, {}, [ModelReward("help", "runs/h", 1.0, "reward.help.model")]),
    (None, {}, []),
])
def test_reward_forms(value, verifiers, models):
    assert parse_reward(value) == (verifiers, models)


def test_a_config_file_reward_string_takes_entries_from_the_command_line(tmp_path):
    path = tmp_path / "rlhf.yaml"
    path.write_text("algorithm: ppo\nreward: model runs/rm_tiny/final\n")
    assert load_config(path).reward == {"model": "runs/rm_tiny/final"}  # the same reward
    mixed = load_config(path, ["--reward.qa_em", "0.5"])
    assert reward_spec(mixed, check=False) == reward_spec(
        load_config(None, ["--reward.qa_em", "0.5", "--reward.model", "runs/rm_tiny/final"]), check=False)


@pytest.mark.parametrize("overrides, message", [
    (["--reward", "runs/a"], r"^reward: expected a mapping .* or 'model PATH'"),
    (["--reward.help.weight", "0.5"], r"^reward\.help\.model: missing the path"),
    (["--reward.help.path", "runs/h"], r"^reward\.help: unknown key 'path'"),
    (["--reward.help.model", "runs/h", "--reward.help.weight", "heavy"],
     r"^reward\.help\.weight: expected a finite number"),
    (["--reward.qa_em", "high"], r"^reward\.qa_em: expected a verifier weight"),
    (["--reward.safe", "model"], r"^reward\.safe \(model PATH\): missing the path"),
    (["--reward.model", "runs/a", "--reward.rm.model", "runs/b"],
     r"reward\.model and reward\.rm\.model both name reward model 'rm'"),
    (["--reward.model", "runs/a", "--rl.reward_model", "runs/b"],
     r"reward\.model and rl\.reward_model both name reward model 'rm'"),
    (["--reward.qa_em", "1", "--env.verifiers.qa_em", "1"],
     r"reward\.qa_em and env\.verifiers\.qa_em both weight verifier 'qa_em'"),
])
def test_bad_reward_settings_fail_at_load_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_names_and_paths_are_checked_before_training(tiny_tokenizer, tmp_path):
    from rlvr.core.models import build_tiny_model

    unknown = load_config(None, ["--reward.qa_emm", "1.0"])
    with pytest.raises(ValueError, match=r"^reward\.qa_emm: unknown verifier 'qa_emm'; known: .*qa_em"):
        env_config(unknown)
    typo = load_config(None, ["--env.verifiers.qa_emm", "1.0", "--reward.model", "x"])
    with pytest.raises(ValueError, match=r"^env\.verifiers\.qa_emm: unknown verifier"):
        env_config(typo)
    missing = load_config(None, ["--reward.help.model", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match=r"^reward\.help\.model: .*nope' does not exist"):
        env_config(missing)
    (tmp_path / "empty").mkdir()
    empty = load_config(None, ["--rl.reward_model", str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match=r"^rl\.reward_model: .* not a saved model directory"):
        env_config(empty)
    # an SFT / policy directory is a causal LM: refused rather than loaded under a random head
    build_tiny_model(tiny_tokenizer, hidden_size=32, num_layers=1).save_pretrained(tmp_path / "lm")
    policy = load_config(None, ["--reward", f"model {tmp_path / 'lm'}"])
    with pytest.raises(ValueError, match=r"^reward: .* holds a LlamaForCausalLM, not a reward model"):
        env_config(policy)


def test_verifier_weights_handed_to_the_environment(tiny_tokenizer, tmp_path):
    path = str(save_reward_model(tiny_rm(tiny_tokenizer), tiny_tokenizer, tmp_path / "rm", {}))

    def weights(*overrides):
        return env_config(load_config(None, list(overrides))).verifiers

    assert weights() == {}  # nothing named: the environment's default verifiers
    assert weights("--reward", f"model {path}") == {"qa_em": 0.0}  # judged, not rewarded
    assert weights("--reward.model", path, "--reward.qa_em", "0.5") == {"qa_em": 0.5}
    # env.verifiers still counts, merged with the reward models of `reward`
    assert weights("--env.verifiers.qa_em", "1.0", "--reward.model", path) == {"qa_em": 1.0}
    assert weights("--reward.qa_em", "0.5", "--reward.format_r1", "0.25") == {"qa_em": 0.5,
                                                                              "format_r1": 0.25}


def test_mixed_reward_is_the_weighted_sum_of_its_parts(tiny_tokenizer, tmp_path):
    """reward = 0.5 × qa_em + 2.0 × (RM score − reference mean), per trajectory, through the
    calculator environment's scoring and the reward model's pass after rollout."""
    from rlvr.rollout.episodes import collect, make_env_factory
    from rlvr.testing import ScriptedEngine

    tok = tiny_tokenizer
    rm = tiny_rm(tok, seed=5)
    cfg = load_config(None, ["--reward.qa_em", "0.5", "--reward.helpful.model", str(tmp_path / "rm"),
                             "--reward.helpful.weight", "2.0", "--run.device", "cpu",
                             "--rollout.max_turns", "1"])
    tasks = [Task("What is 2+3?", "5", id="right"), Task("What is 2+2?", "4", id="wrong")]
    engine = ScriptedEngine(tok, lambda ctx: "<answer>5</answer>")  # right for 2+3 only
    save_reward_model(rm, tok, tmp_path / "rm", {"reference_mean": 0.0})
    trajs = collect(engine, tok, make_env_factory(env_config(cfg)), tasks, samples_per_prompt=1,
                    cfg=cfg.rollout)
    prompts = [tok.decode(t.token_ids[:t.prompt_len]) for t in trajs]
    completions = [tok.decode(t.completion_ids) for t in trajs]
    raw = dict(zip([t.task_id for t in trajs],
                   score_texts(rm, tok, [p + c for p, c in zip(prompts, completions)])))
    # reference mean: the midpoint of the two raw scores, so the parts are +d and -d
    mean = (raw["right"] + raw["wrong"]) / 2
    d = (raw["right"] - raw["wrong"]) / 2
    assert abs(d) > 1e-4  # the two texts score differently, or the check below proves little
    save_reward_model(rm, tok, tmp_path / "rm", {"reference_mean": mean})

    add_model_rewards(trajs, prompts, completions, cfg)
    right, wrong = sorted(trajs, key=lambda t: t.task_id != "right")
    # right: qa_em 1, RM part +d → 0.5 × 1 + 2.0 × d;  wrong: qa_em 0, RM part −d → 0.5 × 0 − 2.0 × d
    assert right.reward_parts["qa_em"] == 1.0 and wrong.reward_parts["qa_em"] == 0.0
    assert right.reward_parts["model:helpful"] == pytest.approx(d, abs=1e-5)
    assert wrong.reward_parts["model:helpful"] == pytest.approx(-d, abs=1e-5)
    assert right.reward == pytest.approx(0.5 + 2.0 * d, abs=1e-5)
    assert wrong.reward == pytest.approx(-2.0 * d, abs=1e-5)
    assert reward_spec(cfg).verifiers == {"qa_em": 0.5}


# -- sft → rm → ppo, end to end --------------------------------------------------------------------

TINY = ["--model.hidden_size", "32", "--model.num_layers", "1", "--run.progress", "false"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """`rlvr train sft_tiny`, then `rlvr train rm_tiny` from the SFT model, then
    `rlvr train rlhf_ppo_tiny` from the SFT model against that reward model with qa_em mixed in."""
    from rlvr.cli import main

    tmp = tmp_path_factory.mktemp("rlhf")
    old = os.environ.get("RLVR_CACHE")
    os.environ["RLVR_CACHE"] = str(tmp / "cache")
    try:
        assert main(["train", "sft_tiny", "--output-dir", str(tmp / "sft"), "--run.steps", "6",
                     "--data.limit", "64", *TINY]) == 0
        sft = tmp / "sft" / "final"
        assert main(["train", "rm_tiny", "--output-dir", str(tmp / "rm"), "--run.steps", "8",
                     "--data.limit", "100", "--pref.batch_size", "12",
                     "--model.name_or_path", str(sft), *TINY]) == 0
        assert main(["train", "rlhf_ppo_tiny", "--output-dir", str(tmp / "ppo"), "--run.steps", "2",
                     "--model.name_or_path", str(sft), "--reward.rm.model", str(tmp / "rm" / "final"),
                     "--reward.qa_em", "0.5", *TINY]) == 0
        yield tmp
    finally:
        if old is None:
            os.environ.pop("RLVR_CACHE", None)
        else:
            os.environ["RLVR_CACHE"] = old


def test_ppo_logs_both_reward_parts_and_their_weighted_sum(chain):
    rows = [json.loads(x) for x in (chain / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert "reward/qa_em" in r and r["reward/model:rm"] != 0.0
        # batch means are linear: mean reward = 0.5 × mean qa_em + 1.0 × mean RM part
        assert r["reward/mean"] == pytest.approx(0.5 * r["reward/qa_em"] + r["reward/model:rm"], abs=1e-5)
    # the policy starts at its KL reference: before the first update the KL is 0
    assert rows[0]["train/kl"] == pytest.approx(0.0, abs=1e-4)
    # a PPO checkpoint's model directory is itself a starting point (model.name_or_path)
    from rlvr.core.models import load_policy

    ckpt = sorted((chain / "ppo" / "checkpoints").glob("step_*"))[-1] / "model"
    policy, _ = load_policy(load_config(None, ["--model.name_or_path", str(ckpt)]).model, "cpu")
    assert policy.config.architectures == ["LlamaForCausalLM"]
    saved = load_config(chain / "ppo" / "config.yaml")
    assert saved.model.name_or_path == str(chain / "sft" / "final")
    assert saved.reward == {"rm": {"model": str(chain / "rm" / "final"), "weight": 1.0}, "qa_em": 0.5}


def test_the_sft_model_is_the_policy_and_the_kl_reference(chain, tmp_path, monkeypatch):
    """What the PPO run above started from: its policy and frozen reference hold the SFT weights
    (which differ from the untrained tiny model's)."""
    from transformers import AutoModelForCausalLM

    from rlvr.learners import common
    from rlvr.core.models import load_policy

    monkeypatch.setenv("RLVR_CACHE", str(chain / "cache"))
    sft_dir = chain / "sft" / "final"
    cfg = load_config("rlhf_ppo_tiny", ["--model.name_or_path", str(sft_dir), "--run.device", "cpu",
                                        "--reward.rm.model", str(chain / "rm" / "final"),
                                        "--run.output_dir", str(tmp_path / "run"), *TINY])
    s = common.setup(cfg, needs_ref=cfg.rl.kl_coef > 0)
    sft = AutoModelForCausalLM.from_pretrained(sft_dir).state_dict()
    base, _ = load_policy(load_config(None, TINY[:4]).model, "cpu")  # `tiny`, before SFT
    for model in (s.model, s.ref_model):
        state = model.state_dict()
        assert all(torch.equal(state[k].cpu(), v) for k, v in sft.items())
    assert s.ref_model is not s.model and not any(p.requires_grad for p in s.ref_model.parameters())
    assert not all(torch.equal(base.state_dict()[k], v) for k, v in sft.items())
    s.logger.close()
