"""Plugin environments (``rlvr.environments``): math, code, search QA, tool calls, toy tasks."""
