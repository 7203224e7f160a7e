"""Online RL with TRL's GRPOTrainer / RLOOTrainer; the reward is a trained reward model or the AI judge."""

from __future__ import annotations

from .common import history, load_tokenizer, lora_config, progress_callback, trl_args


def reward_function(cfg, log, as_callable: bool = False):
    """A reward model directory (TRL loads it as a sequence classifier), or rlaif's judge score as a callable."""
    if cfg.reward.model is not None:
        if as_callable:  # rlaif's own PPO takes any batched callable
            from .rewards import RewardModelReward

            return RewardModelReward(cfg.reward.model), None
        return cfg.reward.model, None
    from .rewards import JudgeScoreReward, load_judge

    judge = cfg.reward.judge
    generator, constitution, pool = load_judge(judge, cfg.file)
    log(f"{cfg.method}: reward = the judge's 1-10 rating mapped to [-1, 1] ({generator.model_id}, {constitution.name}, "
        f"{judge.principles_per_item} principle(s) per prompt and step)")
    return JudgeScoreReward(generator, constitution, principles_per_item=judge.principles_per_item), pool


def _prompts(dataset):
    """One row per distinct prompt: a preference dataset repeats prompts across pairs."""
    seen, keep = set(), []
    for i, prompt in enumerate(dataset["prompt"]):
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return dataset.select(keep).select_columns(["prompt"])


def run(cfg, log) -> dict:
    """Train with GRPO or RLOO, save to output_dir, return the metrics (reward, KL, losses per step)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from ..backends.pool import resolve_model

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[cfg.method]
    dataset = _prompts(datasets.load_from_disk(cfg.dataset))
    args = trl_args(config_cls, cfg)
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    tokenizer.padding_side = "left"  # generation pads on the left
    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    reward, pool = reward_function(cfg, log)
    watch, watch_pool = _watch(cfg, tokenizer, reward, log)
    callbacks = [progress_callback(cfg.method, log)]
    if watch:
        from .watch import trl_callback

        callbacks.append(trl_callback(watch))
    try:
        trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=callbacks)
        result = trainer.train()
    finally:
        for p in (pool, watch_pool):
            if p is not None:
                p.close()
    trainer.save_model(cfg.output_dir)
    metrics = {"prompts": len(dataset), "steps": result.global_step, "train_loss": result.training_loss,
               "history": history(trainer.state.log_history)}
    if watch:
        metrics["watch"] = watch.summary()
    return metrics


def _watch(cfg, tokenizer, reward, log):
    """The reward-hacking watch when the config asks for one; (watch or None, its own engine pool or None)."""
    if cfg.watch is None:
        return None, None
    from .watch import build_watch

    return build_watch(cfg, tokenizer, reward if cfg.reward.judge is not None else None, log)


def run_ppo(cfg, log) -> dict:
    """rlaif's own PPO (rlaif.train.ppo) on the dataset's distinct prompts, kept as messages: PPO renders them with
    the chat template once, and the reward receives the same messages (never a rendered string)."""
    import datasets

    from ..backends.pool import resolve_model
    from .ppo import PPOConfig, train_ppo

    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    dataset = _prompts(datasets.load_from_disk(cfg.dataset))
    prompts = list(dataset["prompt"])
    from transformers import AutoModelForCausalLM

    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    reward, pool = reward_function(cfg, log, as_callable=True)
    watch, watch_pool = _watch(cfg, tokenizer, reward, log)
    try:  # the tokenizer that rendered the prompts is saved with the policy
        rows = train_ppo(path, prompts, reward, PPOConfig(**cfg.ppo, output_dir=cfg.output_dir), log, peft_config, tokenizer,
                            watch)
    finally:
        for p in (pool, watch_pool):
            if p is not None:
                p.close()
    metrics = {"prompts": len(prompts), "steps": len(rows), "train_loss": rows[-1]["policy_loss"] if rows else float("nan"),
               "history": history(rows)}
    if watch:
        metrics["watch"] = watch.summary()
    return metrics
