"""Plugin verifiers (``rlvr.verifiers``): pure ``completion × answer → Score`` functions."""
