"""Bad settings in pipeline, training and constitution files: `--set` into missing sections, out-of-range numbers,
YAML that would make the loader build too much. Each is one line `FILE:LINE: message`, exit 2, before any model loads."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from rlaif.backends import pool as models
from rlaif.spec.config import load_pipeline

from tests.conftest import ROOT, write_pipeline
from tests.fakes import GOOD_PRINCIPLE, assert_one_line, constitution, run_cli


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Bad input must be caught before any model is loaded."""

    def refuse(self, cfg):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(models.ModelPool, "get", refuse)


# --- item 5: --set into a section the file does not have -----------------------------------------------------

def test_set_creates_missing_sections(workdir):
    path = write_pipeline(workdir / "p.yaml", "default", stages="stages:\n  respond: {}\n")
    p = load_pipeline(path, ["models.judge.model=default", "stages.critique.rounds=2", "models.judge.max_retries=0"])
    assert p.models.judge.model == "default" and p.models.judge.max_retries == 0
    assert p.stages.critique.rounds == 2


@pytest.mark.parametrize("assignment, pattern", [
    ("stages.respnd.n=3", r"p\.yaml:8: stages: unknown key 'respnd' \(did you mean 'respond'\?\) \(from --set\)"),
    ("modles.judge.model=x", r"p\.yaml:1: unknown key 'modles' \(did you mean 'models'\?\) \(from --set\)"),
    ("stages.critique.rouns=2", r"p\.yaml:\d+: stages\.critique: unknown key 'rouns' \(did you mean 'rounds'\?\)"),
    ("models.judge.temperature=0", r"p\.yaml:\d+: models\.judge: unknown key 'temperature'"),
])
def test_set_typo_in_a_missing_section(workdir, assignment, pattern):
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default"), "--set", assignment)
    assert code == 2
    assert_one_line(err, pattern)


@pytest.fixture
def sft_config(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
                               ).save_to_disk(str(tmp_path / "sft"))
    path = tmp_path / "t.yaml"
    path.write_text(f"method: sft\ndataset: {tmp_path / 'sft'}\noutput_dir: {tmp_path / 'out'}\n")
    return path


def test_train_set_creates_missing_sections(sft_config):
    from rlaif.train.config import load_train_config

    cfg = load_train_config(sft_config, "sft", ["peft.r=8", "trl.max_steps=1"])
    assert cfg.peft == {"r": 8} and cfg.trl == {"max_steps": 1}


@pytest.mark.parametrize("assignment, pattern", [
    ("peft.rr=8", r"t\.yaml:1: peft\.rr: LoraConfig has no field 'rr' \(did you mean 'r'\?\)"),
    ("trl.learning_rate=.nan", r"t\.yaml:1: trl\.learning_rate: must be a finite number, got nan"),
    ("trl.max_steps=1" + "0" * 5000, r"t\.yaml: --set|trl\.max_steps"),
])
def test_train_set_errors(sft_config, assignment, pattern):
    code, err = run_cli("train", "sft", sft_config, "--set", assignment)
    assert code == 2
    assert_one_line(err, pattern)


# --- item 6: numbers out of range, found at plan time --------------------------------------------------------

MODEL = "  policy: {{model: default, backend: {backend}, {key}: {value}}}\n"
RANGES = [
    # (where, key, value, message)
    ("respond", "temperature", "-0.5", "must be >= 0, got -0.5"),
    ("respond", "temperature", ".nan", "must be a finite number, got nan"),
    ("respond", "temperature", ".inf", "must be a finite number, got inf"),
    ("respond", "top_p", "0", r"must be within \(0, 1\], got 0"),
    ("respond", "top_p", "1.5", r"must be within \(0, 1\], got 1.5"),
    ("respond", "max_tokens", "0", "must be >= 1, got 0"),
    ("critique", "temperature", "-1", "must be >= 0, got -1"),
    ("critique", "top_p", "-0.1", r"must be within \(0, 1\]"),
    ("judge", "cot_clamp", "[.nan, 0.6]", "must be a finite number, got nan"),
    ("score", "min_gap", ".inf", "must be a finite number"),
    ("vllm", "kv_cache_gb", "0", "must be > 0, got 0"),
    ("vllm", "kv_cache_gb", "-2", "must be > 0, got -2"),
    ("vllm", "max_model_len", "0", "must be >= 1, got 0"),
    ("hf", "batch_size", "0", "must be >= 1, got 0"),
    ("openai", "max_concurrency", "0", "must be >= 1, got 0"),
    ("openai", "max_retries", "-1", "must be >= 0, got -1"),
    ("openai", "request_timeout", "0", "must be > 0, got 0"),
    ("openai", "request_timeout", ".inf", "must be a finite number, got inf"),
    ("top", "few_shot", "-1", "must be >= 0, got -1"),
    ("top", "batch_size", "0", "must be >= 1, got 0"),
    ("top", "seed", "-1", r"must be within \[0, 4294967295\], got -1"),
    ("top", "seed", "1" + "0" * 30, r"must be within \[-2\*\*63, 2\*\*63 - 1\]"),
]


@pytest.mark.parametrize("where, key, value, message", RANGES, ids=[f"{w}.{k}={v[:8]}" for w, k, v, _ in RANGES])
def test_out_of_range_numbers_fail_at_plan_time(workdir, where, key, value, message):
    stages = "stages:\n  respond: {n: 2}\n  critique: {}\n  judge: {}\n  score: {}\n"
    extra = {}
    if where in ("respond", "critique", "judge", "score"):
        stages = stages.replace(f"  {where}: {{", f"  {where}: {{{key}: {value}, ").replace(", }", "}")
        if where == "judge" and key == "cot_clamp":
            stages = stages.replace("judge: {", "judge: {chain_of_thought: true, ")
        dotted = f"stages\\.{where}\\.{key}(\\[0\\])?"
    elif where == "top":
        extra[key] = value
        dotted = key
    else:
        dotted = f"models\\.policy\\.{key}"
    path = write_pipeline(workdir / "p.yaml", "default", stages=stages, **extra)
    if where in ("vllm", "hf", "openai"):
        text = path.read_text().replace("  policy: {model: default, backend: hf, dtype: float32}\n",
                                        MODEL.format(backend=where, key=key, value=value))
        if where == "openai":
            text = text.replace("backend: openai,", "backend: openai, base_url: 'http://127.0.0.1:9/v1',")
        path.write_text(text)
    code, err = run_cli("run", path)
    assert code == 2
    holder = {"top": rf"^{key}:", "vllm": "policy:", "hf": "policy:", "openai": "policy:"}.get(where, rf"^  {where}:")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if re.search(holder, t))
    assert_one_line(err, rf"p\.yaml:{line}: {dotted}: {message}")


def test_eval_temperature_below_zero(workdir):
    (workdir / "held.txt").write_text("a\n")
    stages = "stages:\n  respond: {n: 2}\n  sft: {}\n  eval: {prompts: held.txt, temperature: -1}\n"
    code, err = run_cli("run", write_pipeline(workdir / "p.yaml", "default", stages=stages))
    assert code == 2
    assert_one_line(err, r"p\.yaml:11: stages\.eval\.temperature: must be >= 0, got -1")


def test_max_tokens_must_leave_room_for_the_prompt(workdir):
    path = write_pipeline(workdir / "p.yaml", "default", stages="stages:\n  respond: {n: 2, max_tokens: 4096}\n")
    path.write_text(path.read_text().replace("backend: hf, dtype: float32", "backend: vllm"))
    code, err = run_cli("run", path)
    assert code == 2
    assert_one_line(err, r"p\.yaml:9: stages\.respond\.max_tokens: 4096 tokens leave no room for the prompt in "
                         r"models\.policy\.max_model_len \(4096\)")


@pytest.mark.parametrize("weight, message", [(".inf", "must be a finite number, got inf"), (".nan", "must be a finite number, got nan"),
                                             ("-1", "must be > 0, got -1"), ("1" + "0" * 400, "must be a finite number, got inf")])
def test_principle_weight_must_be_finite_and_positive(workdir, weight, message):
    path = constitution(workdir, "name: x\nprinciples:\n" + GOOD_PRINCIPLE + f"    weight: {weight}\n")
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    assert_one_line(err, rf"c\.yaml:7: principles\[0\]\.weight: {message}")


@pytest.mark.parametrize("block, pattern", [
    ("watch:\n  prompts: held.txt\n  min_winrate_drop: 2\n", r"watch\.min_winrate_drop: must be within \[0, 1\], got 2"),
    ("watch:\n  prompts: held.txt\n  kl_bound: -1\n", r"watch\.kl_bound: must be >= 0, got -1"),
    ("reward:\n  judge: {constitution: c.yaml, principles_per_item: 0}\n", r"reward\.judge\.principles_per_item: must be >= 1"),
    ("ppo:\n  kl_coef: .inf\n", r"ppo\.kl_coef: must be a finite number, got inf"),
])
def test_training_file_ranges(tmp_path, block, pattern):
    path = tmp_path / "t.yaml"
    path.write_text(f"method: ppo\ndataset: {tmp_path}\noutput_dir: {tmp_path / 'out'}\n" + block)
    code, err = run_cli("train", "ppo", path)
    assert code == 2
    assert re.search(r"t\.yaml:\d+: " + pattern, err), err
    assert "Traceback" not in err


def test_configs_built_in_python_are_checked_too():
    from rlaif.spec.config import RespondConfig

    with pytest.raises(ValueError, match=r"temperature must be >= 0, got -1.*top_p must be within \(0, 1\], got 0"):
        RespondConfig(temperature=-1.0, top_p=0.0)


# --- item 7 and the YAML cases of item 8: a file must not make the loader build too much ----------------------

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
BOMB = "lol: &l0 lol\n" + LAUGHS


@pytest.mark.subprocess
@pytest.mark.parametrize("where", ["value", "principles", "tags"])
def test_billion_laughs_is_refused_in_seconds(workdir, where):
    text = {"value": "name: x\n" + BOMB + "description: *l9\nprinciples:\n" + GOOD_PRINCIPLE,
            "principles": "name: x\n" + BOMB + "principles: *l9\n",
            "tags": "name: x\n" + BOMB + "principles:\n" + GOOD_PRINCIPLE + "    tags: *l9\n"}[where]
    path = constitution(workdir, text)
    t0 = time.perf_counter()
    # a separate process with a memory cap: the old loader grew past 2 GB formatting the expanded value
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31)); "
            "from rlaif.cli import main; sys.argv = ['rlaif', 'constitution', 'validate', sys.argv[1]]; main()")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, cwd=workdir,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert time.perf_counter() - t0 < 30
    assert done.returncode == 2, done.stderr[-2000:]
    assert_one_line(done.stderr.strip(), r"c\.yaml:\d+: invalid YAML: aliases expand this value to more than 100,000 nodes")


def test_small_aliases_and_merge_keys_still_work(workdir):
    text = "name: x\nbase: &b {critique: Find problems., revision: Fix them.}\nprinciples:\n  - {<<: *b, name: a}\n  - {<<: *b, name: b}\n"
    path = constitution(workdir, text.replace("base:", "description: ''\nx-base:"))
    code, err = run_cli("constitution", "validate", path)
    assert code == 2 and "unknown key 'x-base'" in err  # the alias itself loaded; only the extra key is refused
    path.write_text("name: x\nprinciples:\n  - &p {name: a, critique: c, revision: r}\nfew_shot: []\n")
    code, err = run_cli("constitution", "validate", path)
    assert code == 0, err


@pytest.mark.parametrize("text, pattern", [
    ("name: x\ndescription: " + "[" * 5000 + "]" * 5000 + "\n", r"c\.yaml:2: invalid YAML: nested deeper than 100 levels"),
    ("name: x\nprinciples:\n" + GOOD_PRINCIPLE + "    weight: 1" + "1" * 5000 + "\n", r"c\.yaml:7: invalid YAML: integer too long"),
    ("name: x\nprinciples: &a [*a]\n", r"c\.yaml:2: invalid YAML: an alias refers to a node that contains it"),
    ("name: x\n? [a]\n: b\n", r"c\.yaml:2: invalid YAML: a key must be a scalar, got YamlList"),
    ("name: x\ndescription: [" + ", ".join(["abcdefghij" * 100] * 50) + "]\nprinciples: []\n", r"c\.yaml:2: description: expected str, got YamlList \['abcdefghij.{0,300}\.\.\.\]$"),
], ids=["deep-nesting", "int-over-4300-digits", "recursive-alias", "list-as-key", "long-value-truncated"])
def test_yaml_the_loader_refuses(workdir, text, pattern):
    path = constitution(workdir, text)
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    assert_one_line(err.splitlines()[0], pattern)
    assert len(err) < 1000


def test_non_utf8_yaml_names_its_line(workdir):
    path = workdir / "c.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    code, err = run_cli("constitution", "validate", path)
    assert code == 2
    assert_one_line(err, r"c\.yaml:2: not UTF-8 text")


def test_yaml_with_a_byte_order_mark(workdir):
    path = workdir / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: x\nprinciples:\n" + GOOD_PRINCIPLE.encode())
    code, err = run_cli("constitution", "validate", path)
    assert code == 0, err
