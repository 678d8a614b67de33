"""Rewards: the reward specification (spec), verifier calls one at a time or through a process pool (scoring), and Bradley-Terry reward models (reward_model)."""
