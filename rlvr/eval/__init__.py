"""Evaluation: exact-match / F1 on benchmark files through batched greedy rollouts (benchmarks), and BFCL v4 tool-calling accuracy (bfcl, bfcl_multi_turn)."""
