"""One learner step on fixed trajectories, run alone or under ``torchrun``; saves the gradients of
every optimizer step (after the ranks' all-reduce) and the logged metrics to ``OUT/rank{r}.pt``.

Usage: python dist_worker.py OUT ALGORITHM [fsdp] [resume]   (or under torchrun --nproc_per_node 2)
``fsdp``: run.parallel = fsdp; ``resume``: continue OUT's newest checkpoint for a third step.
"""

import os
import sys

import torch

from rlvr.core.config import TrainConfig
from rlvr.core.models import build_tiny_model, build_tiny_tokenizer
from rlvr.core.types import Task, Trajectory
from rlvr.learners import common
from rlvr.learners.batch import collate
from rlvr.learners.dispatch import learner_for
from rlvr.learners.sharding import full_state_dict, is_sharded

from grads import record_gradients  # tests/helpers, this script's folder

TASKS = [Task(f"q{i}", [str(i)], id=f"t{i}") for i in range(4)]


def fake_rollout(s, step, attempt=0):
    """Deterministic trajectories per task and sample (lengths and rewards differ), on-policy
    behaviour logprobs: the same batch whatever the world size, split by prompts."""
    trajs = []
    for task in s.world.block(s.prompts.next(s.cfg.rl.prompts_per_step)):
        i = int(task.id[1:])
        for j in range(s.cfg.rollout.samples_per_prompt):
            t = Trajectory.from_prompt([5, 6, 7][: 1 + i % 3], group_id=f"{task.id}-{step}", task_id=task.id)
            t.append_sampled([10 + i, 11 + j, 12 + (i * j) % 5][: 2 + (i + j) % 2], [0.0] * (2 + (i + j) % 2))
            t.append_observation([20, 21 + i])
            t.append_sampled([30 + j], [0.0])
            t.reward, t.finish_reason = float((i + j) % 2) + 0.25 * i, "eos"
            trajs.append(t)
    lp = common.forward_logprobs(s, collate(trajs, s.tokenizer.pad_token_id))
    for k, t in enumerate(trajs):
        t.logprobs = [float(lp[k, p]) if m else x for p, (x, m) in enumerate(zip(t.logprobs, t.loss_mask))]
    return trajs, {"time/rollout": 0.0}


def main(out: str, algorithm: str, *flags: str) -> None:
    cfg = TrainConfig(algorithm=algorithm)
    cfg.run.output_dir, cfg.run.steps, cfg.run.progress, cfg.run.device = out, 2, False, "cpu"
    if "fsdp" in flags:
        cfg.run.parallel = "fsdp"
    if "resume" in flags:
        cfg.run.resume, cfg.run.steps = True, 3
    cfg.data.shuffle = False
    cfg.rl.prompts_per_step, cfg.rollout.samples_per_prompt = 4, 2
    cfg.rollout.max_new_tokens, cfg.rollout.max_turns, cfg.rollout.max_total_tokens = 6, 2, 96
    cfg.optim.micro_batch_size, cfg.optim.lr = 3, 1e-2
    # Row order kept: length buckets over one process's 8 rows and over each rank's 4 cut different
    # micro-batches, whose float rounding (step 1's gradients agree to 1e-7 either way) Adam turns
    # into step-2 gradients 8e-6 apart; test_learners checks that buckets keep the gradient.
    cfg.optim.length_buckets = False
    cfg.rl.kl_coef, cfg.rl.entropy_coef = 0.1, 0.01
    if algorithm == "reinforce_pp":
        cfg.rl.kl_in_reward = True
    cfg.validate()
    common.rollout = fake_rollout
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, seed=0)
    with record_gradients() as grads:
        report = learner_for(algorithm)(cfg, model=model, tokenizer=tok, tasks=TASKS)
    rank = int(os.environ.get("RANK", "0"))
    # the trained weights, whole (fully_shard turned ``model`` itself into the sharded module)
    weights = full_state_dict(model) if is_sharded(model) else model.state_dict()
    name = f"rank{rank}{'-resumed' if 'resume' in flags else ''}.pt"
    torch.save({"grads": grads, "final": report["final"], "weights": weights}, os.path.join(out, name))


if __name__ == "__main__":
    main(*sys.argv[1:])
