"""One offline learner run (``dpo`` / ``sft`` / ``rm`` on its tiny bundled config), alone or under
``torchrun``; saves the gradients of every optimizer step (after the ranks' all-reduce) and the
returned report to ``OUT/rank{r}.pt``.

Usage: python offline_worker.py OUT ALGORITHM [--key value ...]   (or under torchrun)
"""

import os
import sys

import torch

from rlvr.core.config import load_config
from rlvr.learners.dispatch import learner_for

from grads import record_gradients  # tests/helpers, this script's folder

# 41 rows: 8 held out, 33 trained in batches of 8, so each epoch ends with a batch of one row,
# which leaves one of two ranks with nothing to train on in that step
SMALL = ["--data.limit", "41", "--pref.batch_size", "8", "--pref.epochs", "1", "--run.steps", "5",
         "--pref.eval_fraction", "0.2", "--optim.micro_batch_size", "3", "--model.hidden_size", "32",
         "--model.num_layers", "1", "--run.progress", "false",
         "--run.device", "cpu"]


def main(out: str, algorithm: str, *extra: str) -> None:
    cfg = load_config(f"{algorithm}_tiny", SMALL + ["--run.output_dir", out, *extra])
    with record_gradients() as grads:
        report = learner_for(algorithm)(cfg)
    rank = int(os.environ.get("RANK", "0"))
    torch.save({"grads": grads, "report": report}, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
