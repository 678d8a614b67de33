"""Dataset readers: RL tasks from bundled generators or files (tasks), preference and SFT rows (preferences), BFCL v4 categories (bfcl)."""
