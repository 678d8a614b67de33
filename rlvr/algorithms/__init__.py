"""On-policy algorithms, one small file each, run by the one loop in :mod:`rlvr.learners.onpolicy`.

See :mod:`rlvr.algorithms.base` for what an algorithm declares and ``docs/algorithms.md`` for
adding one (GSPO is the worked example).
"""
