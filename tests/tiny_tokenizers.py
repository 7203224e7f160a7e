"""Three small tokenizers built in-process, one per family the judge must read correctly, and a "bigram" model.

- `gemma_like`: SentencePiece-style BPE, Metaspace pre-tokenizer with a dummy prefix ("▁"), digits split; out of
  context "A" is "▁A", after "(" it is "A".
- `byte_level`: GPT-2-style byte-level BPE ("Ġ" spaces): a space merges with the next digit ("Ġ7"), so after a
  prompt ending in " " the digit is read one token earlier; "10" is "Ġ1" then "0".
- `single_ten`: Llama-3-style (numbers in groups of up to three digits): "10" is one token.

`bigram_model` builds a tiny Llama whose next-token logits depend only on the last token, as a table we write:
every layer's output projections are zero, so the last hidden state is the (normed) embedding of the last token.
"""

from __future__ import annotations

import math
import string
from pathlib import Path

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _bpe(alphabet: list[str], merges: list[tuple[str, str]], unk: bool):
    from tokenizers import models

    vocab: dict[str, int] = {}
    for t in [*SPECIALS, *alphabet, *(a + b for a, b in merges)]:
        vocab.setdefault(t, len(vocab))
    return models.BPE(vocab=vocab, merges=merges, unk_token="<unk>" if unk else None)


def _wrap(tok, chat: bool):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def gemma_like(chat: bool = False):
    """SentencePiece-like: "▁" dummy prefix, "▁(" and "▁A" are tokens, every digit its own token."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    chars = [c for c in string.printable if not c.isspace()] + ["▁", "\n", "—", "’", "é"]
    merges = [("▁", c) for c in "(ABT"] + [("▁", "▁")]
    tok = Tokenizer(_bpe(chars, merges, unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return _wrap(tok, chat)


def byte_level(chat: bool = False):
    """GPT-2-like byte-level BPE: "ĠA", "Ġ(" and "Ġ1".."Ġ9" are tokens; there is no "10"."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    merges = [("Ġ", c) for c in "(AB"] + [("Ġ", d) for d in "123456789"]
    tok = Tokenizer(_bpe(pre_tokenizers.ByteLevel.alphabet(), merges, unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok, chat)


def single_ten(chat: bool = False):
    """Llama-3-like: numbers split in groups of up to three digits, spaces apart from them; "10" is one token."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers

    merges = [("1", "0"), ("Ġ", "A"), ("Ġ", "B"), ("Ġ", "(")]
    tok = Tokenizer(_bpe(pre_tokenizers.ByteLevel.alphabet(), merges, unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok, chat)


TOKENIZERS = {"gemma_like": gemma_like, "byte_level": byte_level, "single_ten": single_ten}


def bigram_model(tokenizer, table: dict[str, dict[str, float]], directory: Path, everywhere: dict[str, float] | None = None) -> Path:
    """Save a tiny Llama (fp32) with `tokenizer` whose logit of `nxt` after a token `last` is table[last][nxt] (0 when
    not given) plus everywhere[nxt].

    The embedding of token i is e_i + e_bias (two one-hot dimensions); no layer adds anything; RMSNorm makes the
    last hidden state c * (e_last + e_bias) with c = 1 / sqrt(2 / H + eps). So logit(nxt) = c * (W[nxt, last] +
    W[nxt, bias]): table values go into W[nxt, last], `everywhere` values into W[nxt, bias].
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    hidden = vocab + 1 + (vocab + 1) % 2  # one dimension per token, one shared "bias" dimension, an even width
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    bias = hidden - 1
    c = 1 / math.sqrt(2 / hidden + config.rms_norm_eps)
    with torch.no_grad():
        embed = torch.zeros(vocab, hidden)
        embed[torch.arange(vocab), torch.arange(vocab)] = 1.0
        embed[:, bias] = 1.0
        model.model.embed_tokens.weight.copy_(embed)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, hidden)
        for last, row in table.items():
            for nxt, logit in row.items():
                head[tokenizer.convert_tokens_to_ids(nxt), tokenizer.convert_tokens_to_ids(last)] = logit / c
        for nxt, logit in (everywhere or {}).items():
            head[tokenizer.convert_tokens_to_ids(nxt), bias] = logit / c
        model.lm_head.weight.copy_(head)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def softmax_row(row: dict[str, float], vocab: int) -> dict[str, float]:
    """The next-token probabilities a bigram row gives, every other token at logit 0: by hand, in float64."""
    z = sum(math.exp(v) for v in row.values()) + (vocab - len(row))
    return {t: math.exp(v) / z for t, v in row.items()}
