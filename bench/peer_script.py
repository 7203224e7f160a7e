"""The peer: SL-CAI data and a judge pass in a hand-written vLLM script, the way the HF CAI recipe makes its data.

    python bench/peer_script.py CONFIG.json

No rlaif import: the prompts, the constitution's principles, the engine options and the sampling come in the JSON
file bench/peer.py writes (rlaif's defaults, so both sides do the same work). Prints one JSON line: seconds spent
in each `llm.generate` call, tokens generated, and the labels.
"""

import json
import os
import random
import sys
import time

cfg = json.load(open(sys.argv[1]))
os.environ.update(cfg["env"])
from vllm import LLM, SamplingParams  # noqa: E402

llm = LLM(cfg["model"], **cfg["engine"])
stop, timings, tokens = cfg["stop"], {}, {}


def generate(name, prompts, params):
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    timings[name] = time.perf_counter() - t0
    tokens[name] = sum(len(o.outputs[0].token_ids) for o in outs)
    return [o.outputs[0].text.strip() for o in outs]


def sampling(stage, i):
    s = cfg["sampling"][stage]
    return SamplingParams(temperature=s["temperature"], top_p=s["top_p"], max_tokens=s["max_tokens"], stop=stop, seed=i)


rng = random.Random(0)
principles = [rng.choice(cfg["principles"]) for _ in cfg["prompts"]]
convo = [f"Human: {p}\n\n" for p in cfg["prompts"]]
answers = generate("respond", [c + "Assistant:" for c in convo], [sampling("respond", i) for i in range(len(convo))])
asked = [f"{c}Assistant: {a}\n\nCritiqueRequest: {p['critique']}\n\nCritique:" for c, a, p in zip(convo, answers, principles)]
critiques = generate("critique", asked, [sampling("critique", i) for i in range(len(convo))])
revise = [f"{q} {c}\n\nRevisionRequest: {p['revision']}\n\nRevision:" for q, c, p in zip(asked, critiques, principles)]
revisions = generate("revision", revise, [sampling("critique", i) for i in range(len(convo))])


def judge_prompt(c, p, first, second):
    return (f"Consider the following conversation between a human and an assistant:\n\n{c}{p['comparison']}\n"
            f"Options:\n(A) {first}\n(B) {second}\nThe answer is: (")


pairs = [(c, p, a, r) for c, p, a, r in zip(convo, principles, answers, revisions) if a and r and a != r]
orders = [judge_prompt(c, p, a, r) for c, p, a, r in pairs] + [judge_prompt(c, p, r, a) for c, p, a, r in pairs]
t0 = time.perf_counter()
outs = llm.generate(orders, SamplingParams(max_tokens=1, temperature=0, logprobs=20), use_tqdm=False)
timings["judge"] = time.perf_counter() - t0
tok = llm.get_tokenizer()
ids = {o: tok.convert_tokens_to_ids(o) for o in "AB"}
p_a = []
for o in outs:
    top = o.outputs[0].logprobs[0]
    la, lb = (top[ids[x]].logprob if ids[x] in top else float("-inf") for x in "AB")
    p_a.append(None if la == lb == float("-inf") else 1 / (1 + 2.718281828459045 ** (lb - la)))
print(json.dumps({"generate_s": timings, "tokens": tokens, "comparisons": len(pairs), "p_first": p_a[:len(pairs)]}))
