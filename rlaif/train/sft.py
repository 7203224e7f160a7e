"""Supervised fine-tuning on prompt/completion rows (a run's sft/) with TRL's SFTTrainer: the loss is on the answer."""

from __future__ import annotations

from ..errors import UserError
from .common import history, load_tokenizer, lora_config, progress_callback, trl_args


def run(cfg, log) -> dict:
    """Train, save the model (or LoRA adapter) and tokenizer to output_dir, and return the metrics."""
    trainer, rows = build_trainer(cfg, log)
    result = trainer.train()
    trainer.save_model(cfg.output_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"rows": rows, "steps": result.global_step, "train_loss": result.training_loss, "losses": losses,
            "completion_only_loss": trainer.completion_only_loss, "history": history(trainer.state.log_history),
            "train_runtime": result.metrics.get("train_runtime"), "tokens_seen": trainer.state.num_input_tokens_seen}


def build_trainer(cfg, log):
    """The SFTTrainer on the dataset's prompt/completion columns (TRL masks the prompt tokens out of the loss); (trainer, rows)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from ..backends.pool import resolve_model

    args = trl_args(SFTConfig, cfg)  # before the weights: a bad value fails in a second, not after loading
    dataset = datasets.load_from_disk(cfg.dataset)
    if "prompt" not in dataset.column_names and "messages" in dataset.column_names:
        dataset = to_prompt_completion(dataset, cfg)
        log(f"sft: {cfg.dataset} has `messages` rows (an older export): trained as prompt = all but the last turn, "
            "completion = the last assistant turn")
    dataset = dataset.select_columns(["prompt", "completion"])  # provenance columns are not inputs
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32 master weights; bf16 autocasts
    log(f"sft: {len(dataset)} prompt/completion rows from {cfg.dataset}, model {cfg.model}" + (" with LoRA" if peft_config else ""))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[progress_callback("sft", log)])
    return trainer, len(dataset)


def to_prompt_completion(dataset, cfg):
    """`messages` rows -> prompt (every turn but the last) and completion (the last, an assistant turn)."""
    for i, messages in enumerate(dataset["messages"]):
        if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
            raise UserError(f"dataset: row {i} of {cfg.dataset!r} does not end with an assistant turn after a prompt, "
                            "so it has no answer to train on", *cfg.where("dataset"))
    return dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                       remove_columns=["messages"])
