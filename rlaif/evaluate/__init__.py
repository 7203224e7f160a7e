"""Evaluation: win rates against the start, harmlessness, reward-model accuracy, KL (`rlaif eval`, the `eval` stage)."""
