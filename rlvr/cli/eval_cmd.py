"""``rlvr eval``: exact-match accuracy of a model on QA benchmarks, per dataset and averaged.

    rlvr eval --model Qwen/Qwen2.5-3B-Instruct --env search --data nq,hotpotqa \\
              --retriever http://127.0.0.1:8000/retrieve --limit 500 --output-dir runs/eval-qwen
    rlvr eval --model runs/grpo/final --env code --data humaneval.jsonl --output-dir runs/eval-he

A QA environment (one whose verifiers are ``qa_*``) reads benchmark names or QA files and reports
EM / F1 / cover-EM and the untagged answers (see :mod:`rlvr.eval.benchmarks`); any other environment
(``code``, ``math``, ...) reads task files as ``rlvr train`` does (:func:`rlvr.data.tasks.load_tasks`)
and reports accuracy and mean reward from its own verifiers.

The output directory receives ``predictions.jsonl`` (every trajectory; a rerun resumes from it),
``results.txt`` (the table), ``report.json`` and ``em.png`` (EM per dataset; ``accuracy.png``
for other environments).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="EM / F1 / cover-EM of a model on QA benchmarks, or the "
                                    "accuracy of any environment on its task files",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="a hub id, a local directory, a .gguf file, or 'tiny'")
    p.add_argument("--env", default="search",
                   help="search (Search-R1) | search_direct (no retrieval) | search_rag "
                        "(retrieve once) | code | math | bfcl (BFCL function calling) | any "
                        "registered environment; "
                        "default: search")
    p.add_argument("--data", required=True,
                   help="comma-separated benchmark names (nq, triviaqa, popqa, hotpotqa, "
                        "2wikimultihopqa, musique, bamboogle) and/or .jsonl / .parquet files")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--index", help="a saved index directory (`rlvr index build`)")
    where.add_argument("--retriever", help="a retrieval server URL (`rlvr serve`), e.g. "
                                           "http://127.0.0.1:8000/retrieve")
    p.add_argument("--limit", type=int, default=0, help="first N examples of each dataset (0 = all)")
    p.add_argument("--output-dir", default="runs/eval", help="where results go (default runs/eval)")
    p.add_argument("--data-dir", default=None,
                   help="local copies of the benchmarks (<dir>/<name>/<split>.jsonl); "
                        "default $RLVR_QA_DIR, then ./data, then the hub")
    p.add_argument("--split", default=None, help="override each benchmark's default split")
    p.add_argument("--batch-size", type=int, default=16, help="episodes generated together")
    p.add_argument("--topk", type=int, default=3, help="passages per search")
    p.add_argument("--max-turns", type=int, default=4, help="policy turns per episode")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens per turn")
    p.add_argument("--max-obs-tokens", type=int, default=500, help="tokens per observation")
    p.add_argument("--max-total-tokens", type=int, default=4096, help="tokens per trajectory")
    p.add_argument("--template", default=None,
                   help="a text file with the prompt template ({question}, and {passages} for "
                        "search_rag); default: the environment's")
    p.add_argument("--answer-tag", choices=("required", "optional"), default="required",
                   help="required (Search-R1): an episode without <answer> scores 0; optional: "
                        "its last turn's plain text (reasoning in <think> removed) is scored as "
                        "the answer. Either way results.txt counts the untagged answers")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--engine", default="hf", help="hf | vllm")
    p.add_argument("--overwrite", action="store_true",
                   help="discard earlier predictions in the output directory instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or table on stdout")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.env == "bfcl":  # BFCL function calling: its own data, verifier and report
        from rlvr.eval.bfcl import run_bfcl

        return run_bfcl(args)
    from rlvr.core.config import EnvConfig, ModelConfig, RolloutConfig
    from rlvr.core.models import load_policy, pick_device, resolve_model_path
    from rlvr.core.registry import ENVIRONMENTS
    from rlvr.data.tasks import load_tasks, prompt_char_budget
    from rlvr.engines.factory import make_engine
    from rlvr.environments.qa_data import load_qa_many
    from rlvr.eval.benchmarks import evaluate, format_table
    from rlvr.rollout.episodes import make_env_factory
    from rlvr.rollout.log import EvalRolloutLog  # rollouts/eval.jsonl.gz, for `rlvr view`

    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    env_cls = ENVIRONMENTS.get(args.env)
    verifiers = dict(getattr(env_cls, "verifiers", {}) or {})
    scoring = "qa" if any(name.startswith("qa_") for name in verifiers) else "reward"
    settings: dict = {}
    retrieves = hasattr(env_cls, "index_dir")
    if retrieves:
        if not (args.index or args.retriever):
            raise ValueError(f"--env {args.env} retrieves passages: give --index DIR or --retriever URL")
        settings["index_dir" if args.index else "retriever_url"] = args.index or args.retriever
    elif args.index or args.retriever:
        raise ValueError(f"--env {args.env} does not retrieve; drop --index / --retriever")
    if hasattr(env_cls, "topk"):
        settings["topk"] = args.topk
    if args.template:
        settings["template"] = Path(args.template).read_text(encoding="utf-8")
    cfg = RolloutConfig(samples_per_prompt=1, max_turns=args.max_turns,
                        max_new_tokens=args.max_new_tokens, max_total_tokens=args.max_total_tokens,
                        max_obs_tokens=args.max_obs_tokens, temperature=0.0, engine=args.engine)
    if cfg.max_new_tokens >= cfg.max_total_tokens:
        raise ValueError("--max-new-tokens must be below --max-total-tokens")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.jsonl"
    signature = {"model": args.model, "env": args.env, "settings": settings,
                 "rollout": {k: getattr(cfg, k) for k in
                             ("max_turns", "max_new_tokens", "max_obs_tokens", "max_total_tokens")}}
    if args.answer_tag != "required":  # the default leaves the signature of older runs as it was
        signature["answer_tag"] = args.answer_tag
    _check_resume(out, predictions, signature, args.overwrite)

    if scoring == "qa":
        datasets = load_qa_many(args.data, limit=args.limit, split=args.split,
                                data_dir=args.data_dir)
    else:  # task files as training reads them, scored by the environment's verifiers
        datasets = {Path(spec).stem: load_tasks(spec, args.limit, verifiers=verifiers,
                                                max_prompt_chars=prompt_char_budget(
                                                    args.max_total_tokens))
                    for spec in (s.strip() for s in args.data.split(",")) if spec}
    env_factory = make_env_factory(EnvConfig(name=args.env, settings=settings))
    if args.engine == "vllm":  # vLLM holds the weights itself: only the tokenizer is loaded here
        from transformers import AutoTokenizer

        model_path = resolve_model_path(args.model)[0]
        model, tokenizer = None, AutoTokenizer.from_pretrained(model_path)
    else:
        model_path = None
        model, tokenizer = load_policy(ModelConfig(name_or_path=args.model, dtype=args.dtype),
                                       pick_device(args.device, field="--device"))
    if hasattr(env_cls, "chat") and not getattr(tokenizer, "chat_template", None):
        # a base model: the template goes in as plain text, as Search-R1 does for base models
        print(f"{args.model} has no chat template: prompts are sent as plain text", file=sys.stderr)
        settings["chat"] = False
        env_factory = make_env_factory(EnvConfig(name=args.env, settings=settings))
    engine = make_engine(args.engine, model, tokenizer, model_path=model_path)
    result = evaluate(model, tokenizer, datasets, env_factory, cfg=cfg, batch_size=args.batch_size,
                      predictions_path=predictions, progress=not args.no_progress, engine=engine,
                      scoring=scoring, answer_tag=args.answer_tag,
                      on_batch=EvalRolloutLog(out, tokenizer, overwrite=args.overwrite))

    table = format_table(result)
    (out / "results.txt").write_text(table + "\n")
    report = {**signature, "data": args.data, "limit": args.limit, **result}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    key = "em" if scoring == "qa" else "accuracy"
    plot_em(result, out / f"{key}.png", title=f"{Path(args.model).name} · {args.env}", key=key)
    if args.no_progress:
        print(f"average {'EM' if key == 'em' else key} {result['average'][key]:.3f} over "
              f"{result['num_examples']} examples")
    print(f"wrote {out / 'report.json'}", file=sys.stderr)
    return 0


def _check_resume(out: Path, predictions: Path, signature: dict, overwrite: bool) -> None:
    """Resuming is only safe with the same model, environment and budgets; refuse otherwise."""
    meta = out / "eval_settings.json"
    if overwrite:
        predictions.unlink(missing_ok=True)
    elif predictions.exists() and meta.exists():
        old = json.loads(meta.read_text())
        if old != json.loads(json.dumps(signature)):
            raise ValueError(
                f"{out} holds predictions of a different evaluation ({old}); use another "
                f"--output-dir or --overwrite")
    meta.write_text(json.dumps(signature, indent=2) + "\n")


def plot_em(result: dict, path: Path, title: str = "", key: str = "em") -> None:
    """A bar chart of EM (or another per-dataset number, ``key``) per dataset and the average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"]) + ["average"]
    values = [result["datasets"][n][key] for n in names[:-1]] + [result["average"][key]]
    values = [0.0 if v != v else v for v in values]  # NaN (an empty dataset) draws as 0
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names)), 3.2))
    bars = ax.bar(names, values, color=["tab:blue"] * (len(names) - 1) + ["tab:gray"])
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("exact match" if key == "em" else key)
    ax.set_ylim(0, max(1.0, max(values) * 1.15))
    ax.set_title(title, fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
