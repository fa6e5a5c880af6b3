"""Bad-input matrix, config rows: YAML, keys, types, ranges, non-finite numbers, duplicate keys, YAML 1.1 booleans,
dict-valued TrainingArguments fields, secrets in messages, regularizer / freezing / LLRD / Hub sections.

Each row: the input (a config edit and/or overrides), exit code 2, a pattern for the one error line; the output
folder (a sentinel and a real checkpoint) stays as it was (:func:`matrix_harness.expect_refusal`).
"""

from __future__ import annotations

import pytest
from matrix_harness import (FAKE_TOKEN, Ctx, all_of, ctx, fresh, row, run_cli_row, seed_checkpoint,  # noqa: F401
                            tiny_model_dir, tiny_vit_dir)

NO_TOKEN = rf"^(?!.*{FAKE_TOKEN[:8]})"  # the line never echoes a value that looks like a token


def _append(text: str):
    return lambda c: c.append(text)


def _replace(old: str, new: str):
    return lambda c: c.replace(old, new)


def _write(text: str):
    return lambda c: c.cfg.write_text(text)


def _regs(spec: str):
    def prep(c: Ctx):
        c.drop_checkpoint()  # checkpoint-1 was written without regularizers: that refusal would come first
        c.append(f"regularizers: {spec}\n")
    return prep


def _missing_cfg(c: Ctx):
    c.cfg.unlink()


def _cfg_is_dir(c: Ctx):
    c.cfg = c.tmp / "confdir"
    c.cfg.mkdir()


def _gradual_bad_depths(c: Ctx):
    c.append("freezing: {policy: gradual, schedule: {unit: step, phases: [{start: 0, depths: [7]}]}}\n")


def _dup(old: str, new: str):
    return _replace(old, new)


def DUP(key: str, *lines: int) -> str:
    """The duplicate-key line: the key, 'twice' or 'duplicate', and the line numbers."""
    return all_of(f"'{key}'", "(twice|duplicate)", *(rf"\b{n}\b" for n in lines))


CONFIG_ROWS = [
    # -- file and YAML ------------------------------------------------------------------------------------------------
    row("config-unknown-section", _append("optimiser: {lr: 1}\n"), [],
        ["unknown config section 'optimiser'", "Valid sections", "training"]),
    row("config-bad-yaml", _write("training: {output_dir: [unclosed\n  learning_rate: 1e-3\n"), [],
        ["run.yaml", "is not valid YAML", "line"]),
    row("config-yaml-not-mapping", _write("- model\n- data\n"), [], ["top level must be a mapping", "got list"]),
    row("config-yaml-scalar", _write("just a sentence\n"), [], r"top level must be a mapping.*got str"),
    row("config-missing-file", _missing_cfg, [], ["config file not found", "run.yaml"]),
    row("config-path-is-a-directory", _cfg_is_dir, [], r"confdir.*(is a directory|not a file)"),
    row("config-python-tag-refused", _append("hub: !!python/object/apply:os.system ['echo pwned']\n"), [],
        r"run\.yaml.*(not valid YAML|python)"),
    row("config-section-not-mapping", _append("hub: [push]\n"), [], ["hub", "must be a mapping"]),
    row("config-section-scalar", _append("peft: true\n"), [], r"'peft' must be a mapping"),
    # -- duplicate keys (YAML keeps the last one silently) ------------------------------------------------------------
    row("dup-section-training", _append("training: {learning_rate: 5e-4}\n"), [],
        DUP("training", 3, 14)),
    row("dup-section-model", _append("model: {name_or_path: /elsewhere}\n"), [],
        DUP("model", 1, 14)),
    row("dup-key-in-block-section", _dup("  learning_rate: 1e-3\n", "  learning_rate: 1e-3\n  learning_rate: 1e-2\n"),
        [], DUP("learning_rate", 7, 8)),
    row("dup-key-in-flow-mapping", _dup("llrd: {decay: 0.8}", "llrd: {decay: 0.8, decay: 0.5}"), [],
        DUP("decay", 13)),
    row("dup-key-data-column", _dup("text_column: sentence", "text_column: sentence, text_column: label"), [],
        DUP("text_column", 2)),
    row("dup-key-nested-schedule",
        _append("freezing:\n  policy: gradual\n  schedule:\n    unit: step\n    every: 1\n    every: 2\n"), [],
        DUP("every", 18, 19)),
    row("dup-key-in-regularizer", _regs("[{name: l2sp, alpha: 0.1, alpha: 0.2}]"), [],
        DUP("alpha", 14)),
    row("dup-key-top-level-task", _write("task: text_classification\ntask: continual\n"), [],
        DUP("task", 1, 2)),
    # -- keys ---------------------------------------------------------------------------------------------------------
    row("config-misspelled-key-override", None, ["training.learnin_rate=1e-4"], ["learnin_rate", "learning_rate"]),
    row("config-misspelled-key-in-file", _replace("llrd: {decay: 0.8}", "llrd: {decya: 0.8}"), [],
        ["llrd.decya", "did you mean llrd.decay"]),
    row("config-misspelled-bare-key", None, ["max_train_sample=5"], ["max_train_sample", "data.max_train_samples"]),
    row("config-misspelled-training-key-in-file", _replace("  max_steps: 3", "  max_step: 3"), [],
        r"max_step\b.*max_steps"),
    row("config-unknown-section-override", None, ["optimizer.lr=1"], r"unknown config section 'optimizer'"),
    row("config-override-not-key-value", None, ["noequals"], ["'noequals'", "key=value"]),
    row("config-override-empty-key", None, ["training..lr=1"], r"override 'training\.\.lr=1' has an empty key"),
    row("config-override-whole-section", None, ["llrd=0.9"], r"llrd=0\.9 names a whole section"),
    row("config-override-regularizers", None, ["regularizers.0.alpha=1"], r"regularizers list can only be set"),
    row("config-ambiguous-bare-key", None, ["weight_decay=0.1"], ["ambiguous", "write the section explicitly"]),
    row("config-bad-task", None, ["task=text_clasification"],
        ["unknown config task 'text_clasification'", "did you mean text_classification"]),
    # -- types --------------------------------------------------------------------------------------------------------
    row("config-wrong-type-int", None, ["data.max_length=abc"], ["data.max_length", "expected int", "'abc'"]),
    row("config-wrong-type-int-float", None, ["data.max_length=16.5"], r"data\.max_length.*int.*16\.5"),
    row("config-wrong-type-bool", None, ["model.save_model=maybe"], ["model.save_model", "expected bool"]),
    row("config-wrong-type-float", None, ["training.learning_rate=fast"], r"training\.learning_rate.*'fast'"),
    row("config-wrong-type-list-for-float", _replace("learning_rate: 1e-3", "learning_rate: [1e-3]"), [],
        r"training\.learning_rate.*(float|number)"),
    row("config-wrong-type-dict-for-int", _replace("max_steps: 3", "max_steps: {n: 3}"), [],
        r"training\.max_steps.*int"),
    row("config-wrong-type-str-for-list", None, ["peft.target_modules=5"], r"peft\.target_modules"),
    row("config-wrong-type-null-for-str", _replace("text_column: sentence", "text_column: null"), [],
        r"data\.text_column"),
    row("config-bad-scheduler-choice", None, ["training.lr_scheduler_type=cosin"], ["lr_scheduler_type", "cosine"]),
    row("config-bad-eval-strategy-choice", None, ["training.eval_strategy=sometimes"],
        r"eval_strategy.*'?sometimes'?"),
    # -- YAML 1.1 booleans --------------------------------------------------------------------------------------------
    row("yaml-bool-no-eval-strategy",
        _replace("  save_strategy: steps\n", "  save_strategy: steps\n  eval_strategy: no\n"),
        [], r"(?i)training\.eval_strategy.*YAML.*\bno\b.*false.*quot"),
    row("yaml-bool-off-save-strategy", _replace("  save_strategy: steps\n", "  save_strategy: off\n"), [],
        r"(?i)training\.save_strategy.*YAML.*\boff\b.*false.*quot"),
    row("yaml-bool-yes-text-column", _replace("text_column: sentence", "text_column: yes"), [],
        r"(?i)data\.text_column.*YAML.*\byes\b.*true.*quot"),
    # -- ranges and non-finite numbers --------------------------------------------------------------------------------
    row("config-out-of-range-samples", None, ["data.max_train_samples=0"], ["data.max_train_samples must be >= 1"]),
    row("config-negative-samples", None, ["data.max_train_samples=-3"], r"data\.max_train_samples must be >= 1"),
    row("config-out-of-range-lr", None, ["training.learning_rate=-1"], ["training.learning_rate must be > 0"]),
    row("config-zero-batch-size", None, ["training.per_device_train_batch_size=0"],
        r"training\.per_device_train_batch_size must be > 0"),
    row("config-zero-accumulation", None, ["training.gradient_accumulation_steps=0"],
        r"training\.gradient_accumulation_steps must be > 0"),
    row("config-zero-max-steps", None, ["training.max_steps=0"], r"training\.max_steps must be > 0"),
    row("config-negative-weight-decay", None, ["training.weight_decay=-0.1"], r"training\.weight_decay must be >= 0"),
    row("config-max-length-zero", None, ["data.max_length=0"], r"data\.max_length"),
    row("config-peft-r-zero", None, ["peft.enabled=true", "peft.r=0"], r"peft\.r must be >= 1"),
    row("config-peft-dropout-one", None, ["peft.enabled=true", "peft.dropout=1.0"], r"peft\.dropout must be in"),
    row("config-num-labels-one", None, ["model.num_labels=1"], r"model\.num_labels must be >= 2"),
    row("config-early-stopping-negative", None, ["early_stopping.patience=-1"], r"early_stopping\.patience"),
    row("nonfinite-lr-inf", None, ["training.learning_rate=inf"], r"(?i)training\.learning_rate.*(finite|\binf)"),
    row("nonfinite-lr-nan", None, ["training.learning_rate=nan"], r"(?i)training\.learning_rate.*(finite|\bnan)"),
    row("nonfinite-lr-overflow", None, ["training.learning_rate=1e999"],
        r"(?i)training\.learning_rate.*(finite|\binf|1e999)"),
    row("nonfinite-lr-yaml-inf", _replace("learning_rate: 1e-3", "learning_rate: .inf"), [],
        r"(?i)training\.learning_rate.*(finite|\binf)"),
    row("nonfinite-weight-decay-nan", None, ["training.weight_decay=nan"],
        r"(?i)training\.weight_decay.*(finite|\bnan)"),
    row("nonfinite-max-grad-norm-inf", None, ["training.max_grad_norm=inf"],
        r"(?i)training\.max_grad_norm.*(finite|\binf)"),
    row("nonfinite-warmup-nan", None, ["training.warmup_steps=nan"], r"(?i)training\.warmup_steps.*(finite|\bnan)"),
    row("nonfinite-adam-epsilon-inf", None, ["training.adam_epsilon=inf"],
        r"(?i)training\.adam_epsilon.*(finite|\binf)"),
    row("nonfinite-adam-beta1-nan", None, ["training.adam_beta1=nan"], r"(?i)training\.adam_beta1.*(finite|\bnan)"),
    row("nonfinite-epochs-inf", None, ["training.num_train_epochs=inf"],
        r"(?i)training\.num_train_epochs.*(finite|\binf)"),
    row("nonfinite-label-smoothing-nan", None, ["training.label_smoothing_factor=nan"],
        r"(?i)training\.label_smoothing_factor.*(finite|\bnan)"),
    row("nonfinite-llrd-decay-nan", None, ["llrd.decay=nan"], r"(?i)llrd\.decay.*(finite|\bnan)"),
    row("nonfinite-llrd-head-lr-inf", None, ["llrd.head_lr=inf"], r"(?i)llrd\.head_lr.*(finite|\binf)"),
    row("nonfinite-early-stopping-threshold", None, ["early_stopping.threshold=nan"],
        r"(?i)early_stopping\.threshold.*(finite|\bnan)"),
    row("nonfinite-strategy-llrd-decay", None, ["strategy.llrd_decay=nan"],
        r"(?i)strategy\.llrd_decay.*(finite|\bnan)"),
    row("nonfinite-peft-dropout", None, ["peft.enabled=true", "peft.dropout=nan"],
        r"(?i)peft\.dropout.*(finite|\bnan)"),
    row("nonfinite-ewc-lambda", _regs("[{name: ewc, lambda: .inf}]"), [],
        r"(?i)regularizers\[0\]\.lambda.*(finite|\binf)"),
    row("nonfinite-l2sp-alpha", _regs("[{name: l2sp, alpha: .nan}]"), [],
        r"(?i)regularizers\[0\]\.alpha.*(finite|\bnan)"),
    row("nonfinite-data-eval-fraction", None, ["data.eval_fraction=nan"], r"(?i)data\.eval_fraction"),
    # -- dict-valued TrainingArguments fields -------------------------------------------------------------------------
    row("training-dict-field-bad-key", None, ["training.lr_scheduler_kwargs={bogus_arg: 1}"],
        r"training\.lr_scheduler_kwargs.*bogus_arg"),
    row("training-dict-field-bad-key-in-file",
        _replace("  max_steps: 3\n",
                 "  max_steps: 3\n  lr_scheduler_type: cosine\n  lr_scheduler_kwargs: {cycles: 2}\n"),
        [], r"training\.lr_scheduler_kwargs.*cycles"),
    row("training-accelerator-config-bad-key", None, ["training.accelerator_config={no_such_option: true}"],
        r"training.*accelerator_config.*no_such_option"),
    row("training-dict-field-not-a-dict", None, ["training.lr_scheduler_kwargs=[1, 2]"],
        r"training\.lr_scheduler_kwargs"),
    # -- secrets in messages ------------------------------------------------------------------------------------------
    row("token-in-misspelled-key-override", None, [f"training.hub_tokn={FAKE_TOKEN}"],
        NO_TOKEN + r".*hub_tokn.*hub_token"),
    row("token-in-misspelled-key-file", _replace("  max_steps: 3\n", f"  max_steps: 3\n  hub_tokenn: {FAKE_TOKEN}\n"),
        [], NO_TOKEN + r".*hub_tokenn.*hub_token"),
    row("token-in-wrong-type", None, [f"model.save_model={FAKE_TOKEN}"], NO_TOKEN + r".*model\.save_model.*bool"),
    row("token-as-bare-argument", None, [FAKE_TOKEN], NO_TOKEN + r".*key=value"),
    row("token-in-unknown-section", _append(f"auth: {{token: {FAKE_TOKEN}}}\n"), [],
        NO_TOKEN + r".*unknown config section 'auth'"),
    row("token-in-bad-yaml", _write(f"training: {{hub_token: {FAKE_TOKEN}, output_dir: [\n"), [],
        NO_TOKEN + r".*not valid YAML"),
    row("token-as-repo-id", None, ["hub.push=true", f"hub.repo_id={FAKE_TOKEN}/x"], NO_TOKEN + r".*cannot push",
        new_files=True),
    # -- regularizers -------------------------------------------------------------------------------------------------
    row("reg-unknown-name", _regs("[{name: l2sq}]"), [], ["unknown regularizer 'l2sq'", "l2sp"]),
    row("reg-misspelled-key", _regs("[{name: ewc, lamda: 1.0}]"), [], ["unknown ewc key 'lamda'", "lambda"]),
    row("reg-not-a-list", _regs("{name: l2sp}"), [], ["regularizers must be a list", "[{name: l2sp"]),
    row("reg-entry-without-name", _regs("[{alpha: 0.1}]"), [], r"regularizers must be a list of mappings with a name"),
    row("reg-negative-lambda", _regs("[{name: ewc, lambda: -1}]"), [], ["ewc lambda must be a number >= 0", "-1"]),
    row("reg-negative-alpha", _regs("[{name: l2sp, alpha: -0.5}]"), [], ["l2sp alpha must be a number >= 0"]),
    row("reg-negative-beta", _regs("[{name: l2sp, beta: -2}]"), [], ["l2sp beta must be a number >= 0"]),
    row("reg-negative-gamma", _regs("[{name: online_ewc, gamma: -0.1}]"), [],
        ["online_ewc gamma must be a number >= 0"]),
    row("reg-wrong-type-lambda", _regs("[{name: ewc, lambda: strong}]"), [], r"regularizers\[0\]\.lambda.*'strong'"),
    row("reg-l2sp-source-missing", _regs("[{name: l2sp, source: /nonexistent/pretrained}]"), [],
        ["l2sp source", "/nonexistent/pretrained", "does not exist"]),
    # -- freezing, LLRD, early stopping, strategy, Hub ----------------------------------------------------------------
    row("freezing-unknown-policy", None, ["freezing.policy=top_j"], ["'top_j'", "valid policies", "top_k"]),
    row("freezing-top-k-too-large", fresh(), ["freezing.policy=top_k", "freezing.k=5"], ["k=5", "only 2 blocks"]),
    row("freezing-top-k-negative", None, ["freezing.policy=top_k", "freezing.k=-1"], r"(?i)freezing.*\bk\b.*-1"),
    row("freezing-gradual-depths-missing", fresh(_gradual_bad_depths), [], ["gradual phase 0", "depths [7]", "depths 0..3"]),
    row("freezing-bad-pattern-regex", None, ["freezing.policy=patterns", "freezing.include=['(']"],
        r"(?i)freezing pattern '\(' is not a valid regex"),
    row("llrd-decay-above-1", None, ["llrd.decay=1.5"], ["llrd.decay", "1.5"]),
    row("llrd-decay-zero", None, ["llrd.decay=0"], ["llrd.decay"]),
    row("early-stopping-without-eval", None, ["early_stopping.patience=2"],
        ["early_stopping.patience > 0 needs evaluations", "training.eval_strategy"]),
    row("strategy-unknown-mode", None, ["strategy.mode=automatic"], r"strategy\.mode must be one of.*'automatic'"),
    row("strategy-thresholds-inverted", None, ["strategy.small_max=500", "strategy.medium_max=100"],
        r"small_max < medium_max"),
    row("hub-push-without-repo-id", None, ["hub.push=true"], ["hub.repo_id is not set", "hub.repo_id=user/"]),
    row("hub-push-offline", None, ["hub.push=true", "hub.repo_id=me/tiny"],
        ["cannot push to me/tiny", "HF_HUB_OFFLINE", "hf upload me/tiny"], new_files=True),
    # an invalid hub.repo_id is refused with the config (huggingface_hub's validate_repo_id), not after training
    row("hub-repo-id-space", None, ["hub.push=true", "hub.repo_id=my model"],
        all_of(r"hub\.repo_id is not a valid Hub repo id", "alphanumeric", "user/my-model")),
    row("hub-repo-id-three-parts", None, ["hub.repo_id=a/b/c"], all_of(r"hub\.repo_id", "namespace/repo_name")),
    row("hub-repo-id-dot-git", None, ["hub.push=true", "hub.repo_id=me/tiny.git"], all_of(r"hub\.repo_id", r"\.git")),
    # -- robust fine-tuning (issue 12) ----------------------------------------------------------------------------
    row("wise-ft-alpha-outside-0-1", None, ["wise_ft.alphas=[0.5,1.2]"], ["wise_ft.alphas[1]", "in [0, 1]"]),
    row("model-pooling-unknown", None, ["model.pooling=max"], ["model.pooling must be one of auto, mean, cls"]),
    row("extra-eval-set-unknown-dataset", _append("evaluation: {extra_eval_sets: [{name: ood, dataset: imbd}]}\n"),
        [], ["extra_eval_sets[0].dataset", "'imbd'", "imdb_test2000"]),
    row("extra-eval-set-missing-file", fresh(_append("evaluation: {extra_eval_sets: [{name: ood, file: nope.tsv}]}\n")),
        [], ["nope.tsv"]),
    row("lp-ft-cache-schedule-not-head-only",
        fresh(_append("freezing: {policy: gradual, cache_features: true, schedule: {unit: step, phases: "
                      "[{start: 0, depths: 1}, {start: 2, depths: 3}]}}\n")), [],
        ["cache_features with policy gradual needs a first phase that trains only the head"]),
    row("feature-cache-dir-without-cache-features", None,
        ["freezing.policy=feature_extraction", "freezing.feature_cache_dir=fc"],
        ["freezing.feature_cache_dir", "cache_features is false"]),
    # -- DeepSpeed (issue 14): tl_hf's features are refused under it before training; without deepspeed installed
    row("deepspeed-with-llrd-and-ewc", _regs("[{name: ewc, lambda: 1.0}]"), ["training.deepspeed=ds.json"],
        all_of("DeepSpeed is not supported with tl_hf's regularizers", "ewc", r"llrd \(decay 0\.8", "use DDP",
               "FSDP2")),
    row("deepspeed-with-gradual-freezing", fresh(_append("freezing: {policy: gradual}\n")),
        ["llrd.decay=1.0", "training.deepspeed=ds.json"],
        all_of("DeepSpeed is not supported", "freezing policy 'gradual'", "use DDP")),
    row("deepspeed-not-installed", fresh(), ["llrd.decay=1.0", "training.deepspeed=ds.json"],
        all_of(r"training: .*deepspeed", "install it")),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", CONFIG_ROWS)
def test_config_row(ctx, prep, overrides, expected, opts, capsys, request):
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
