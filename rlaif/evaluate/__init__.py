"""Evaluation: win rates against the start, harmlessness, reward-model accuracy, KL, the reward-hacking watch, the HTML report."""
