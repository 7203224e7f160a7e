"""Reward-hacking watch for online RL: is the policy getting better by the judge, or only by the reward?

Every `every` steps the policy answers a fixed set of held-out prompts greedily; the AI judge compares each
answer with the starting policy's answer (both orders, the judge stage) and gives a win rate. A warning is
logged and recorded when, across the last `window` checks, the training reward rose while the judge win
rate fell by at least `min_winrate_drop`, or when the training KL passed `kl_bound`. One row per check goes
to OUTPUT_DIR/watch.jsonl: {step, reward, judge_win_rate, ci95, kl, warning, format, stop}. The start's answers and
every check's are written in one prompt format (the training tokenizer's, decided once at the start) with the
same stop strings and greedy decoding.
"""

from __future__ import annotations

from pathlib import Path

from ..backends.hf import HFGenerator, eos_ids
from ..rundir import atomic
from ..spec.config import JudgeConfig
from ..stages.common import prompt_format
from ..rundir.store import Store
from ..stages.compare import Session, answers, compare, decoding, win_rates


def hacking_warning(history: list[dict], window: int, min_drop: float, kl_bound: float | None) -> str | None:
    """Why the latest check looks like reward hacking, or None. history: rows with reward, judge_win_rate, kl."""
    last = history[-1]
    if kl_bound is not None and last.get("kl") is not None and last["kl"] > kl_bound:
        return f"KL {last['kl']:.3f} is past the bound {kl_bound}"
    recent = history[-window:]
    if len(recent) < window or any(r.get("reward") is None or r.get("judge_win_rate") is None for r in recent):
        return None
    rewards, rates = [r["reward"] for r in recent], [r["judge_win_rate"] for r in recent]
    if rewards[-1] > rewards[0] and rates[0] - rates[-1] >= min_drop:
        return (f"reward rose {rewards[0]:.3f} -> {rewards[-1]:.3f} while the judge win rate fell "
                f"{rates[0]:.3f} -> {rates[-1]:.3f} over the last {window} checks")
    return None


class LiveGenerator(HFGenerator):
    """The Generator seam over a model being trained: eval mode (and left padding) only while it generates or scores."""

    def __init__(self, model, tokenizer, model_id: str, batch_size: int = 16):
        self.model, self.tokenizer, self.model_id, self.batch_size = model, tokenizer, model_id, batch_size
        self.device = next(model.parameters()).device
        self.has_chat_template = bool(tokenizer.chat_template)
        self.logit_dtype = "float32"  # HFGenerator.logprobs reads options through an fp32 head
        self._eos_ids = eos_ids(model, tokenizer)

    def logprobs(self, requests, options):
        """HFGenerator.logprobs in eval mode (no dropout), leaving the model's mode as it was."""
        training = self.model.training
        self.model.eval()
        try:
            return super().logprobs(requests, options)
        finally:
            self.model.train(training)

    def generate(self, requests, progress=None):
        """HFGenerator.generate, leaving the model's mode and the tokenizer's padding side as they were."""
        training, side = self.model.training, self.tokenizer.padding_side
        self.model.eval()
        self.tokenizer.padding_side = "left"
        try:
            return super().generate(requests, progress)
        finally:
            self.tokenizer.padding_side = side
            self.model.train(training)


class Watch:
    """Checks the policy against its starting point every `cfg.every` steps; rows go to output_dir/watch.jsonl."""

    def __init__(self, cfg, prompts, judge_generator, constitution, tokenizer, output_dir: str, log=print, seed: int = 0):
        self.cfg, self.prompts, self.judge, self.tokenizer, self.log = cfg, prompts, judge_generator, tokenizer, log
        self.session = Session(constitution, Store(":memory:"), seed=seed)
        self.judge_cfg = JudgeConfig(principles_per_comparison=cfg.principles_per_comparison)
        self.path = Path(output_dir) / "watch.jsonl"
        self.history: list[dict] = []
        self.reference: list[dict] = []
        self._rewards: list[float] = []
        self._kls: list[float] = []
        self.next_check = cfg.every
        self.format: str | None = None  # pinned at begin(): the start and every check answer alike

    def _answers(self, model, name: str) -> list[dict]:
        generator = LiveGenerator(model, self.tokenizer, name)
        self.format = self.format or prompt_format("auto", generator)
        return answers(self.session, generator, self.prompts, self.cfg.max_new_tokens, 0.0, self.format)

    def begin(self, model) -> None:
        """The starting policy's answers: what every later check is compared with."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict] = []  # this training's checks: watch.jsonl is rewritten whole (atomic) after each
        atomic.write_jsonl(self.path, self._rows)
        self.format = None
        self.reference = self._answers(model, "start")
        self.log(f"watch: {len(self.prompts)} prompts, judged every {self.cfg.every} steps against the starting policy")

    def observe(self, reward: float | None, kl: float | None) -> None:
        """A training step's (or log's) reward and KL; averaged into the next check."""
        if reward is not None:
            self._rewards.append(float(reward))
        if kl is not None:
            self._kls.append(float(kl))

    def due(self, step: int) -> bool:
        """Whether a check is due at this step."""
        return step >= self.next_check

    def check(self, step: int, model) -> dict:
        """Judge the current policy against the start; record the row and any warning."""
        current = self._answers(model, f"step-{step}")
        judged = compare(self.session, self.judge, self.prompts, current, self.reference, self.judge_cfg)
        overall, _, _ = win_rates(self.prompts, current, self.reference, judged, tie_band=0.05, seed=self.session.seed)
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        how = decoding(self.session, self.format, self.cfg.max_new_tokens, 0.0)
        row = {"step": step, "reward": mean(self._rewards), "judge_win_rate": overall["win_rate"], "ci95": overall["ci95"],
               "kl": mean(self._kls), "warning": None, "format": how["format"], "stop": how["stop"]}
        self.history.append(row)
        row["warning"] = hacking_warning(self.history, self.cfg.window, self.cfg.min_winrate_drop, self.cfg.kl_bound)
        self._rows.append(row)
        atomic.write_jsonl(self.path, self._rows)  # a kill mid-write leaves the previous checks, never half a line
        reward = "n/a" if row["reward"] is None else f"{row['reward']:.4f}"
        kl = "n/a" if row["kl"] is None else f"{row['kl']:.4f}"
        self.log(f"watch {step}: reward {reward}, judge win rate {overall['win_rate']} {overall['ci95']}, kl {kl}")
        if row["warning"]:
            self.log(f"WARNING reward hacking? {row['warning']}")
        self._rewards, self._kls = [], []
        while self.next_check <= step:
            self.next_check += self.cfg.every
        return row

    def summary(self) -> dict:
        """What rlaif_train.json keeps: the checks and the warnings."""
        return {"checks": len(self.history), "warnings": [{"step": r["step"], "warning": r["warning"]}
                                                         for r in self.history if r["warning"]],
                "last_win_rate": self.history[-1]["judge_win_rate"] if self.history else None}

    def close(self) -> None:
        """Close the in-memory store."""
        self.session.store.close()


def build_watch(cfg, tokenizer, reward_judge, log):
    """The Watch for a training config, reusing the reward's judge when the watch names none; (watch, pool or None)."""
    from ..spec.config import resolve_path
    from ..spec.inputs import load_prompts
    from .rewards import load_judge

    w = cfg.watch
    prompts = load_prompts(resolve_path(w.prompts, Path(cfg.file).resolve().parent), w.limit)
    if w.judge is None:  # the reward is the judge: the same engine and constitution
        generator, constitution, pool = reward_judge.generator, reward_judge.constitution, None
    else:
        generator, constitution, pool = load_judge(w.judge, cfg.file)
    return Watch(w, prompts, generator, constitution, tokenizer, cfg.output_dir, log), pool


def trl_callback(watch: Watch):
    """A transformers TrainerCallback for TRL's GRPO/RLOO: reward and KL from each log, a check when one is due."""
    from transformers import TrainerCallback

    class WatchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            watch.begin(model)

        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            logs = logs or {}
            if "reward" not in logs:  # the end-of-training summary log carries no reward
                return
            watch.observe(logs.get("reward"), logs.get("kl"))
            if watch.due(state.global_step):
                watch.check(state.global_step, model)

    return WatchCallback()
