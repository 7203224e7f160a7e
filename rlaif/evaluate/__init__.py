"""Evaluation: does the aligned model get better, and can the AI feedback be trusted."""
