"""PPO: the loss and advantage math on hand-written tensors, the rollout's masks, and a tiny end-to-end run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rlaif.train.ppo import AdaptiveKLController, FixedKLController, PolicyWithValue, PPOConfig, PPOTrainer, completion_mask, gae, logprobs_from_logits, masked_mean, masked_whiten, per_token_rewards, policy_loss, train_ppo, value_loss


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run fastest on one thread; on a busy 2-core machine two threads made a PPO step ~80x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ----------------------------------------------------------------------------- pure functions


def test_gae_by_hand_with_padding():
    """gamma 0.9, lam 0.5 (gamma * lam = 0.45); row 2's last position is padding and must not leak in.

    row 1, r = [0.1, -0.2, 1.0], V = [0.5, 0.4, 0.3]:
      t=2: delta = 1.0 - 0.3 = 0.7                      A = 0.7
      t=1: delta = -0.2 + 0.9*0.3 - 0.4 = -0.33         A = -0.33 + 0.45*0.7 = -0.015
      t=0: delta = 0.1 + 0.9*0.4 - 0.5 = -0.04          A = -0.04 + 0.45*(-0.015) = -0.04675
      returns = A + V = [0.45325, 0.385, 1.0]
    row 2, r = [0.0, 2.0, (5.0)], V = [1.0, 0.5, (9.0)], mask [1, 1, 0]:
      t=1 is the last real token: delta = 2.0 - 0.5 = 1.5                  A = 1.5
      t=0: delta = 0.0 + 0.9*0.5 - 1.0 = -0.55                              A = -0.55 + 0.45*1.5 = 0.125
      returns = [1.125, 2.0, 0]; the padded position gets A = R = 0
    """
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert close(advantages, [[-0.04675, -0.015, 0.7], [0.125, 1.5, 0.0]])
    assert close(returns, [[0.45325, 0.385, 1.0], [1.125, 2.0, 0.0]])
    # gamma = lam = 1: the returns are the rewards-to-go, whatever the values
    _, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert close(returns, [[0.9, 0.8, 1.0], [2.0, 2.0, 0.0]])


def test_policy_loss_by_hand():
    """ratio = exp(logp - old); cliprange 0.2, so the ratio is clipped to [0.8, 1.2]; the 5th token is padding.

    token  ratio  A    -A*ratio  -A*clip(ratio)  max    clipped?
    0      1.5    1    -1.5      -1.2            -1.2   yes
    1      0.5    1    -0.5      -0.8            -0.5   no  (a worse action may always be made less likely)
    2      1.1    -1   1.1       1.1             1.1    no  (inside the range)
    3      0.5    -1   0.5       0.8             0.8    yes
    loss = (-1.2 - 0.5 + 1.1 + 0.8) / 4 = 0.05; clipfrac = 2/4
    approx_kl = mean((ratio - 1) - log ratio); d loss / d logp = -A * ratio / 4 where not clipped, 0 where clipped.
    """
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0]])
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.5, 9.0]])
    logprobs = (old + ratios.log()).requires_grad_()
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    loss, clipfrac, approx_kl = policy_loss(logprobs, old, advantages, mask, cliprange=0.2)
    assert close(loss, 0.05) and close(clipfrac, 0.5)
    assert close(approx_kl, sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1, 0.5)) / 4)
    loss.backward()
    assert close(logprobs.grad, [[0.0, -0.5 / 4, 1.1 / 4, 0.0, 0.0]])


def test_value_loss_by_hand():
    """V_old = 0, cliprange_value 0.2, so V_clip = clip(V, -0.2, 0.2); the 4th token is padding.

    token  V     R    (V-R)^2  V_clip  (V_clip-R)^2  max   clipped?
    0      0.5   1    0.25     0.2     0.64          0.64  yes (the clipped error is larger)
    1      0.1   1    0.81     0.1     0.81          0.81  no
    2      -0.3  0    0.09     -0.2    0.04          0.09  no
    loss = 0.5 * (0.64 + 0.81 + 0.09) / 3 = 0.256667; clipfrac = 1/3
    """
    values = torch.tensor([[0.5, 0.1, -0.3, 7.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0]])
    loss, clipfrac = value_loss(values, torch.zeros(1, 4), returns, mask, cliprange_value=0.2)
    assert close(loss, 0.5 * 1.54 / 3) and close(clipfrac, 1 / 3)


def test_per_token_rewards_by_hand():
    """r_t = -0.1 * (logp_t - ref_logp_t) on real tokens, plus the score at the last real token.

    row 1: logp - ref = [0.5, 0, -1] -> [-0.05, 0, 0.1], score 1 at t=2 -> [-0.05, 0, 1.1]
    row 2: logp - ref = [1, 0, (6)], mask [1, 1, 0] -> [-0.1, 0, 0], score 2 at t=1 -> [-0.1, 2.0, 0]
    """
    logprobs = torch.tensor([[-1.0, -2, -3], [-1, -1, -1]])
    ref_logprobs = torch.tensor([[-1.5, -2, -2], [-2, -1, -7]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    rewards = per_token_rewards(torch.tensor([1.0, 2.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    assert close(rewards, [[-0.05, 0.0, 1.1], [-0.1, 2.0, 0.0]])


def test_masked_mean_and_whiten():
    x = torch.tensor([[1.0, 2, 3, 100], [4, 5, 6, -50]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 0]])
    assert close(masked_mean(x, mask), 3.5)
    out = masked_whiten(x, mask)
    real = out[mask.bool()]
    assert close(real.mean(), 0.0, 1e-5) and close(real.var(unbiased=False), 1.0, 1e-5)
    assert close(real, (torch.arange(1.0, 7) - 3.5) / math.sqrt(17.5 / 6), 1e-5)
    assert (out[~mask.bool()] == 0).all()


def test_logprobs_and_completion_mask():
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0]]])  # p = [1/4, 3/4], then [1/2, 1/2]
    assert close(logprobs_from_logits(logits, torch.tensor([[1, 0]])), [[math.log(0.75), math.log(0.5)]])
    tokens = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0], [5, 9, 6, 2]])
    assert close(completion_mask(tokens, torch.tensor([2])), [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert close(completion_mask(tokens, torch.tensor([2, 9]))[3], [1, 1, 0, 0])  # several EOS ids


def test_kl_controllers():
    """err = clip(KL / 6 - 1, -0.2, 0.2); kl_coef *= 1 + err * n / 10000.

    KL 9:   err = clip(0.5) = 0.2    -> 0.1 * (1 + 0.2 * 100 / 10000) = 0.1002
    KL 5.4: err = -0.1               -> 0.1002 * (1 - 0.1 * 100 / 10000) = 0.1002 * 0.999
    KL 0:   err = clip(-1) = -0.2    -> * (1 - 0.2 * 5000 / 10000) = * 0.9
    """
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(9.0, 100)
    assert ctl.value == pytest.approx(0.1002)
    ctl.update(5.4, 100)
    assert ctl.value == pytest.approx(0.1002 * 0.999)
    ctl.update(0.0, 5000)
    assert ctl.value == pytest.approx(0.1002 * 0.999 * 0.9)
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 100)
    assert fixed.value == 0.05


def test_config_reports_every_bad_value():
    PPOConfig()  # the defaults are valid
    with pytest.raises(ValueError) as e:
        PPOConfig(batch_size=6, mini_batch_size=4, kl_mode="adptive", cliprange=0, top_p=1.5)
    for message in ("mini_batch_size (4) must divide batch_size (6)", "kl_mode must be 'fixed' or 'adaptive'",
                    "cliprange must be > 0", "top_p must be in (0, 1]"):
        assert message in str(e.value)


# ----------------------------------------------------------------------------- the trainer


def test_rollout_masks_and_step_on_tiny_model(tiny_base_model):
    """Left-padded prompts score as if alone (masks and position ids right); one step gives finite stats."""
    from transformers import AutoTokenizer

    seen = []

    def reward(prompts, completions):
        seen.append((prompts, completions))
        return [float(len(c)) for c in completions]

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    config = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, total_steps=1)
    trainer = PPOTrainer(str(tiny_base_model), tokenizer, reward, config)
    prompts = ["Human: hi\n\nAssistant:", "Human: how do I make a good cup of tea at home?\n\nAssistant:"] * 2
    torch.manual_seed(0)
    seq, attention, P, mask, texts = trainer.rollout(prompts)
    assert attention[0, :P].sum() < attention[1, :P].sum() == P  # the short prompt was left-padded
    with torch.no_grad():
        logprobs, values, _ = trainer._evaluate(seq, attention, P)
        for i in range(len(prompts)):
            real = attention[i, :P].bool()
            alone = torch.cat([seq[i, :P][real], seq[i, P:]])[None]
            alone_attention = torch.cat([attention[i, :P][real], attention[i, P:]])[None]
            lp, v, _ = trainer._evaluate(alone, alone_attention, int(real.sum()))
            assert close(lp[0] * mask[i], logprobs[i] * mask[i], 1e-4) and close(v[0] * mask[i], values[i] * mask[i], 1e-4)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)

    stats = trainer.step(prompts)
    assert seen[-1][0] == prompts and len(seen[-1][1]) == 4
    for key in ("score", "kl", "entropy", "policy_loss", "value_loss", "policy_clipfrac", "value_clipfrac", "approx_kl",
                "kl_coef"):
        assert math.isfinite(stats[key]), key
    trainer.reward_fn = lambda p, c: [1.0]
    with pytest.raises(ValueError, match="returned 1 rewards for 4 completions"):
        trainer.step(prompts)


WORDS = "the cat sat on a mat and dog ran to big red sun".split()
TARGET = "sun"
PROMPTS = ["the cat sat on", "a dog ran to the", "big red", "the sun"]


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> Path:
    """A 16-token word-level Llama: every word starts near 1/16 likely, so the target token is sampled from step one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("word-model")
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def target_reward(prompts, completions):
    """The share of the completion's words that are the target."""
    return [c.split().count(TARGET) / max(1, len(c.split())) for c in completions]


def target_frequency(path) -> float:
    """The share of sampled completion tokens (EOS included) that are the target, over 128 seeded samples."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = PPOTrainer(str(path), tokenizer, target_reward, PPOConfig(max_new_tokens=8))
    torch.manual_seed(123)
    seq, _, P, mask, _ = trainer.rollout(PROMPTS * 32)
    return float(((seq[:, P:] == tokenizer.convert_tokens_to_ids(TARGET)) * mask).sum() / mask.sum())


E2E = dict(learning_rate=1e-3, batch_size=16, mini_batch_size=8, ppo_epochs=4, max_new_tokens=8, total_steps=25,
           kl_mode="fixed", seed=0, log_every=5)


def test_end_to_end_target_token_rises_with_bounded_kl(word_model, tmp_path):
    """25 rollouts: the target word goes from ~1/16 of the tokens to several times that, while the KL penalty
    (0.05) holds the KL to the reference to a few nats (seeds 0-9: 0.42-0.52 after, KL 3.3-5.4; without the
    penalty the KL reaches 6-20 nats)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ppo"
    lines = []
    history = train_ppo(str(word_model), PROMPTS, target_reward, PPOConfig(**E2E, kl_coef=0.05, output_dir=str(out)),
                        log=lines.append)
    before, after = target_frequency(word_model), target_frequency(out)
    final_kl = sum(h["kl"] for h in history[-5:]) / 5
    print(f"target frequency {before:.3f} -> {after:.3f}; mean KL of the last 5 rollouts {final_kl:.2f} nats")
    assert before < 0.1 and after > 0.25 and after > 3 * before
    assert sum(h["score"] for h in history[-5:]) > 3 * sum(h["score"] for h in history[:5])
    assert final_kl < 10.0
    assert len(history) == 25 and len(lines) == 7  # 5 progress lines, the start and the save
    for h in history:
        assert all(math.isfinite(h[k]) for k in ("policy_loss", "value_loss", "kl", "entropy", "approx_kl")), h

    # save(): a loadable model that is the trained one, plus the value head and the tokenizer
    start = AutoModelForCausalLM.from_pretrained(word_model).state_dict()
    trained = PolicyWithValue.from_pretrained(str(out))
    assert any(not torch.equal(start[k], v) for k, v in trained.lm.state_dict().items())
    assert trained.value_head.weight.abs().sum() > 0  # trained away from its zero init
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(TARGET) == WORDS.index(TARGET) + 3
    assert (out / "ppo_history.jsonl").read_text().count("\n") == 25

    # the penalty is what holds the KL: ten times the coefficient keeps the policy within a fraction of a nat
    held = PPOTrainer(str(word_model), AutoTokenizer.from_pretrained(word_model), target_reward,
                      PPOConfig(**E2E, kl_coef=0.5)).train(PROMPTS, log=lambda _: None)
    assert sum(h["kl"] for h in held[-5:]) / 5 < min(1.0, final_kl / 3)


def _two_steps(model_path, **options):
    from transformers import AutoTokenizer

    config = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=2, max_new_tokens=6, total_steps=2, **options)
    trainer = PPOTrainer(str(model_path), AutoTokenizer.from_pretrained(model_path), lambda p, c: [float(len(x)) for x in c], config)
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    history = trainer.train(["Human: hi\n\nAssistant:", "Human: tell me about tea\n\nAssistant:"], log=lambda *a: None)
    return trainer, before, history


def test_bf16_autocast_keeps_fp32_weights_and_trains(tiny_base_model):
    """bf16: forward passes under autocast (CPU here, CUDA on GPUs); master weights and stats stay float32 and finite."""
    trainer, before, history = _two_steps(tiny_base_model, bf16=True)
    after = trainer.policy.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(math.isfinite(h[k]) for h in history for k in ("kl", "policy_loss", "value_loss", "entropy"))
    seq, attention, P, mask, _ = trainer.rollout(["Human: hi\n\nAssistant:"])
    with torch.no_grad():
        logprobs, values, _ = trainer._evaluate(seq, attention, P)
    assert logprobs.dtype == values.dtype == torch.float32  # losses are computed in fp32 whatever the autocast dtype


def test_gradient_checkpointing_gives_the_same_updates(tiny_base_model):
    """Checkpointing recomputes activations; with dropout off, the updates equal the plain run's."""
    torch.manual_seed(0)
    plain, _, h1 = _two_steps(tiny_base_model)
    torch.manual_seed(0)
    checkpointed, _, h2 = _two_steps(tiny_base_model, gradient_checkpointing=True)
    assert checkpointed.policy.lm.is_gradient_checkpointing and not checkpointed.policy.training
    for a, b in zip(h1, h2):
        assert a["policy_loss"] == pytest.approx(b["policy_loss"], abs=1e-5) and a["kl"] == pytest.approx(b["kl"], abs=1e-5)
    for (name, x), y in zip(plain.policy.state_dict().items(), checkpointed.policy.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5), name


@pytest.mark.gpu
def test_bf16_ppo_on_gpu(tiny_base_model):
    """On a CUDA device the same run uses bfloat16 autocast on the GPU."""
    trainer, before, history = _two_steps(tiny_base_model, bf16=True)
    assert trainer.device.type == "cuda" and all(math.isfinite(h["policy_loss"]) for h in history)
