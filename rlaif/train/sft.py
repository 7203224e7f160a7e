"""Supervised fine-tuning on `messages` rows (a run's sft/) with TRL's SFTTrainer."""

from __future__ import annotations

from . import load_tokenizer, lora_config, trl_args


def run(cfg, log) -> dict:
    """Train, save the model (or LoRA adapter) and tokenizer to output_dir, and return the metrics."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from ..models import resolve_model

    args = trl_args(SFTConfig, cfg)  # before the weights: a bad value fails in a second, not after loading
    dataset = datasets.load_from_disk(cfg.dataset).select_columns(["messages"])  # provenance columns are not inputs
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path, log)
    peft_config = lora_config(cfg, path, AutoModelForCausalLM, "CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32 master weights; bf16 autocasts
    log(f"sft: {len(dataset)} conversations from {cfg.dataset}, model {cfg.model}" + (" with LoRA" if peft_config else ""))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(cfg.output_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"rows": len(dataset), "steps": result.global_step, "train_loss": result.training_loss, "losses": losses,
            "train_runtime": result.metrics.get("train_runtime"), "tokens_seen": trainer.state.num_input_tokens_seen}
