"""Config, data-format and metric-line contracts (no torch), and the bad-input table through train.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from finetune.config import ConfigError, TrainConfig
from finetune.formats import MESSAGES, PROMPT_COMPLETION, TEXT, TEXT_LABEL, DataError, detect_format
from finetune.metrics import METRIC_DEFINITIONS, METRIC_NAMES, format_metric, parse_metric_line

from .conftest import SAMPLES, run_train


def lines(*objs):
    return list(enumerate((o if isinstance(o, str) else json.dumps(o) for o in objs), start=1))


def test_light_modules_import_without_torch():
    code = (
        "import sys; import finetune, finetune.config, finetune.formats, finetune.metrics; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=SAMPLES.parent / "training_code"
    )
    assert proc.returncode == 0, proc.stderr


def test_config_defaults_depend_on_task():
    causal = TrainConfig.from_hyperparameters({"task": "causal-lm"}, train_path="t", model_channel="m")
    classification = TrainConfig.from_hyperparameters({"task": "classification"}, train_path="t", model_channel="m")
    assert (causal.method, causal.packing, causal.learning_rate) == ("lora", True, 2e-4)
    assert (classification.method, classification.packing, classification.learning_rate) == ("full", False, 5e-5)


def test_config_parses_sagemaker_strings():
    config = TrainConfig.from_hyperparameters(
        {
            "task": "causal-lm",
            "epochs": "2.5",
            "max_steps": "10",
            "packing": "False",
            "gradient_checkpointing": "TRUE",
            "lora_target_modules": "q_proj, v_proj",
            "sagemaker_program": "train.py",
        },
        train_path="t",
        base_model="b",
    )
    assert config.epochs == 2.5 and config.max_steps == 10
    assert config.packing is False and config.gradient_checkpointing is True
    assert config.lora_targets == ["q_proj", "v_proj"]


def test_config_error_lists_every_problem_with_name_and_value():
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_hyperparameters(
            {
                "task": "classification",
                "epochs": "many",
                "packing": "true",
                "batch_size": "0",
                "lerning_rate": "1",
                "precision": "fp8",
                "lora_scaling": "sqrt",
                "lora_plus_ratio": "0.5",
                "min_lr_ratio": "1",
            },
            train_path="t",
            model_channel="m",
        )
    message = str(caught.value)
    for expected in (
        "epochs='many': must be a number",
        "packing=True: packing applies to task=causal-lm only",
        "batch_size=0: must be >= 1",
        "lerning_rate='1': unknown hyperparameter",
        "precision='fp8': must be one of auto, bf16, fp32",
        "lora_scaling='sqrt': must be one of rslora, standard",
        "lora_plus_ratio=0.5: must be >= 1 and <= 64",
        "min_lr_ratio=1.0: must be >= 0 and < 1",
    ):
        assert expected in message


def test_config_rejects_checkpoints_inside_model_dir():
    with pytest.raises(ConfigError, match="must not be inside model_dir"):
        TrainConfig(
            task="causal-lm", train_path="t", base_model="b", model_dir="/x/model", checkpoint_dir="/x/model/ckpt"
        )


@pytest.mark.parametrize(
    ("task", "obj", "fmt"),
    [
        (
            "causal-lm",
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            MESSAGES,
        ),
        ("causal-lm", {"prompt": "2+2=", "completion": "4"}, PROMPT_COMPLETION),
        ("causal-lm", {"text": "plain text"}, TEXT),
        ("classification", {"text": "good", "label": "pos"}, TEXT_LABEL),
        ("classification", {"text": "good", "label": 1}, TEXT_LABEL),
    ],
)
def test_detect_format(task, obj, fmt):
    assert detect_format(task, "f.jsonl", lines(obj, "", obj)) == fmt


@pytest.mark.parametrize(
    ("task", "content", "where", "problem"),
    [
        ("causal-lm", ['{"text": "a"}', '{"text": '], 2, "malformed JSON"),
        ("causal-lm", [{"question": "q", "answer": "a"}], 1, "unrecognised fields (answer, question)"),
        ("causal-lm", [{"text": "a"}, {"prompt": "p", "completion": "c"}], 2, "mixed formats"),
        (
            "causal-lm",
            [{"messages": [{"role": "user", "content": "only a question"}]}],
            1,
            "no non-empty assistant message",
        ),
        ("causal-lm", [{"messages": [{"role": "bot", "content": "x"}]}], 1, "messages[0].role is 'bot'"),
        ("classification", [{"text": "a", "label": 1.5}], 1, '"label" must be an integer or a non-empty string'),
        ("classification", [{"text": "a"}], 1, "unrecognised fields (text) for task=classification"),
        ("causal-lm", ["[1, 2]"], 1, "expected a JSON object"),
        ("causal-lm", ["", "  "], None, "file is empty"),
    ],
)
def test_format_errors_name_file_line_and_problem(task, content, where, problem):
    with pytest.raises(DataError) as caught:
        detect_format(task, "data/train.jsonl", lines(*content))
    assert caught.value.line == where
    assert problem in str(caught.value)
    assert str(caught.value).startswith("data/train.jsonl")


def test_metric_definitions_are_cloudwatch_ready():
    assert {
        "train_loss",
        "learning_rate",
        "eval_loss",
        "perplexity",
        "token_accuracy",
        "accuracy",
        "f1_macro",
        "tokens_per_second",
        "epoch",
    } <= set(METRIC_NAMES)
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        line = format_metric(definition["Name"], 1.25e-5, 12)
        match = re.search(definition["Regex"], line)
        assert match and float(match.group(1)) == 1.25e-5
    assert format_metric("accuracy", 0.5, 3) == "metric accuracy=0.5 step=3"
    assert parse_metric_line("metric eval_loss=2.5 step=7") == ("eval_loss", 2.5, 7)
    with pytest.raises(ValueError):
        format_metric("train_loss", float("nan"), 1)


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD_CLS = [{"text": "great film", "label": 1}, {"text": "awful film", "label": 0}] * 4


@pytest.mark.training
@pytest.mark.parametrize(
    ("case", "train_rows", "val_rows", "extra", "expected"),
    [
        ("malformed JSON", [*GOOD_CLS, '{"text": "oops", "label": 1'], None, [], "train.jsonl, line 9: malformed JSON"),
        ("wrong fields", [{"sentence": "x", "target": 1}], None, [], "line 1: unrecognised fields (sentence, target)"),
        ("empty file", [], None, [], "train.jsonl: file is empty"),
        ("unknown label", GOOD_CLS, [{"text": "meh", "label": 2}], [], "validation.jsonl, line 1: unknown label 2"),
        (
            "mixed formats",
            None,
            None,
            ["--task", "causal-lm"],
            "train.jsonl, line 2: mixed formats: this line is 'prompt-completion' but line 1 made the file 'text'",
        ),
        (
            "bad hyperparameter",
            GOOD_CLS,
            None,
            ["--learning_rate", "fast", "--epochs", "-1"],
            "Bad hyperparameters: learning_rate='fast': must be a number; epochs=-1.0: must be a positive number",
        ),
        (
            "fsdp with adapters",
            GOOD_CLS,
            None,
            ["--distributed_strategy", "fsdp", "--method", "lora"],
            "distributed_strategy='fsdp': fsdp is for method=full; LoRA/QLoRA use ddp",
        ),
        (
            "qlora without GPU",
            [{"text": "hello world"}] * 4,
            None,
            ["--task", "causal-lm", "--method", "qlora"],
            "method=qlora needs a CUDA GPU",
        ),
    ],
)
def test_bad_input_fails_with_reason(tmp_path, minilm_dir, case, train_rows, val_rows, extra, expected):
    # Given a broken input, when train.py runs, then it exits non-zero with the reason in <output>/failure.
    if train_rows is None:
        train_rows = [{"text": "plain"}, {"prompt": "p", "completion": "c"}]
    train = _write(tmp_path / "train.jsonl", train_rows)
    args = ["--task", "classification", "--base_model", str(minilm_dir), "--train", str(train), *extra]
    if val_rows is not None:
        args += ["--validation", str(_write(tmp_path / "validation.jsonl", val_rows))]
    run = run_train(tmp_path / "run", args, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert run.failure is not None and expected in run.failure, run.failure
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "run" / "model").exists()
