"""The training methods, in one table: what each reads, where its model lands, which soft-label modes it takes.

Everything that names a method (the config's stage keys, `rlaif train`'s choices, the trainers' dispatch, the
stage eval's policies, the run-directory reader) reads this table, so a new method is one row here plus its runner.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    columns: tuple[str, ...]  # the dataset columns the trainer needs
    soft_labels: tuple[str, ...]  # how it reads a pair's label p (rlaif.train.confidences); first: the default
    policy: bool  # its output is a policy (reward's is a reward model)
    online: bool  # samples while it trains: takes a reward source and a reward-hacking watch
    output_dir: str  # below the run directory, unless the stage sets output_dir

    @property
    def dataset(self) -> str:
        """The run's dataset it trains on: sft/ (completions) or prefs/ (pairs, or just their prompts)."""
        return "sft" if "completion" in self.columns else "prefs"


PAIRS = ("prompt", "chosen", "rejected")
METHODS = {m.name: m for m in (
    Method("sft", ("prompt", "completion"), ("none",), policy=True, online=False,
           output_dir="sft-model"),  # <run>/sft is the SFT *dataset*: a model saved there was deleted by the next export
    Method("reward", PAIRS, ("cross_entropy", "margin", "none"), policy=False, online=False, output_dir="reward"),
    Method("dpo", PAIRS, ("cdpo", "rdpo", "weight", "none"), policy=True, online=False, output_dir="dpo"),
    Method("grpo", ("prompt",), ("none",), policy=True, online=True, output_dir="grpo"),
    Method("rloo", ("prompt",), ("none",), policy=True, online=True, output_dir="rloo"),
    Method("ppo", ("prompt",), ("none",), policy=True, online=True, output_dir="ppo"),
)}
NAMES = tuple(METHODS)  # the training stages, in the order a run trains them
POLICIES = tuple(m.name for m in METHODS.values() if m.policy)
ONLINE = tuple(m.name for m in METHODS.values() if m.online)


def listing(names: tuple[str, ...], last: str = "or") -> str:
    """'a, b, c or d': method names for a message."""
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else names[0]
