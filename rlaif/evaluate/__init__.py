"""Evaluation of a run: win rates, bias diagnostics and the HTML report."""
