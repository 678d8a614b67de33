"""The learner an ``algorithm`` name stands for.

Offline learners (``sft``, ``rm``, ``dpo``) are registered functions ``learner(cfg, **kw)``; an
on-policy algorithm is a declaration (:class:`~rlvr.algorithms.base.OnPolicyAlgorithm`) that the one
loop, :func:`rlvr.learners.onpolicy.train`, runs.
"""

from __future__ import annotations

import functools
from typing import Callable

from rlvr.algorithms.base import OnPolicyAlgorithm
from rlvr.core.registry import ALGORITHMS
from rlvr.learners.onpolicy import train


def learner_for(name: str) -> Callable[..., dict]:
    """``learner_for(name)(cfg, model=, tokenizer=, tasks=, eval_fn=, logger=)`` runs ``name``; an
    unknown name fails listing the registered ones."""
    algo = ALGORITHMS.get(name)
    if isinstance(algo, OnPolicyAlgorithm):
        return functools.partial(train, algorithm=algo)
    return algo
