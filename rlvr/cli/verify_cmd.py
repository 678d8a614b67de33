"""``rlvr verify``: run a verifier on one completion, or on a JSONL predictions file through the pool.

    rlvr verify math --completion 'so \\boxed{1/2}' --answer 0.5
    rlvr verify qa_em --completion '<answer>Paris</answer>' --answer '["Paris", "paris, france"]'
    rlvr verify math --input preds.jsonl          # fields: completion, answer, info (optional)
    rlvr verify math=1,format_r1=0.1 --input preds.jsonl   # several verifiers with weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="score completions with a verifier; prints Score JSON")
    p.add_argument("name", help="verifier name, or name=weight,name=weight to combine several")
    p.add_argument("--completion", help="the completion text to score")
    p.add_argument("--answer", help="the reference answer: text, or JSON (a list of golds)")
    p.add_argument("--info", default=None, help="extra verifier keyword arguments as a JSON object")
    p.add_argument("--input", type=Path, default=None,
                   help="JSONL file with completion, answer and optional info per line")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per check in the pool (default: rlvr.core.scoring.DEFAULT_TIMEOUT_S)")
    p.add_argument("--workers", type=int, default=None, help="pool worker processes (--input)")
    p.set_defaults(func=run)


def parse_target(name: str) -> str | dict[str, float]:
    """``math`` → "math"; ``math=1,format_r1=0.1`` → {"math": 1.0, "format_r1": 0.1}."""
    if "=" not in name:
        return name
    weights: dict[str, float] = {}
    for part in name.split(","):
        key, sep, value = part.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"verifier weights must look like name=1.0,other=0.1; got {part!r}") from None
        if not sep or not key.strip():
            raise ValueError(f"verifier weights must look like name=1.0,other=0.1; got {part!r}")
    return weights


def parse_answer(text: str) -> Any:
    """JSON lists, objects and quoted strings are decoded; anything else stays the text given."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (list, dict, str)) else text


def run(args) -> int:
    from rlvr.core.registry import VERIFIERS
    from rlvr.core.scoring import DEFAULT_TIMEOUT_S, combine, verify, verify_batch

    target = parse_target(args.name)
    for n in ([target] if isinstance(target, str) else list(target)):
        VERIFIERS.get(n)  # an unknown name fails here, listing the known ones
    timeout_s = args.timeout or DEFAULT_TIMEOUT_S
    if args.input is not None:
        if args.completion is not None:
            raise ValueError("give either --input FILE.jsonl or --completion TEXT, not both")
        items = read_items(args.input)
        for s in verify_batch(target, items, timeout_s=timeout_s, workers=args.workers):
            print(json.dumps(s.to_dict()))
        return 0
    if args.completion is None or args.answer is None:
        raise ValueError("--completion and --answer are required (or --input FILE.jsonl)")
    info = parse_info(args.info, "--info")
    if isinstance(target, str):
        score = verify(target, args.completion, parse_answer(args.answer), **info)
    else:
        score = combine(target, args.completion, parse_answer(args.answer), **info)
    print(json.dumps(score.to_dict()))
    sys.stdout.flush()
    return 0


def parse_info(text: str | None, where: str) -> dict:
    if text is None:
        return {}
    try:
        info = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(info).__name__}")
    return info


def read_items(path: Path) -> list[dict]:
    """Rows of a predictions file, each checked, with errors naming ``FILE:LINE`` and the field
    (a byte that is not UTF-8 too: lines are decoded one at a time)."""
    from rlvr.data.rows import iter_jsonl

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    items = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("completion"), str):
            raise ValueError(f"{where}: field 'completion' must be a string")
        if "answer" not in row:
            raise ValueError(f"{where}: missing field 'answer'")
        info = row.get("info") or {}
        if not isinstance(info, dict):
            raise ValueError(f"{where}: field 'info' must be an object")
        items.append({"completion": row["completion"], "answer": row["answer"], "info": info})
    return items
