"""Fine-tune an image classifier (ViT family) with TransferTrainer from a YAML config (the same code path as
``tl-hf run``).

    python recipes/image_classification.py recipes/configs/hymenoptera_vit.yaml [key=value ...]

Flow (tl_hf.run.tasks.image_classification.run_image_classification): config -> model config (fails fast offline) -> data (image folders or
MNIST, seeded subsets, unreadable files skipped or reported) -> model -> TransferTrainer (LLRD, freezing) -> train ->
evaluate -> all_results.json, eval_predictions.jsonl, confusion_matrix.png.
"""

import os
import sys

import yaml

from tl_hf.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and os.path.isfile(argv[0]):  # anything else (bad YAML too): tl-hf's own error message
        try:
            with open(argv[0], encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except yaml.YAMLError:
            raw = None
        task = ([a.split("=", 1)[1] for a in argv[1:] if a.startswith("task=")]
                or [raw.get("task") if isinstance(raw, dict) else "image_classification"])[-1]
        if task != "image_classification":
            print(f"image_classification.py: error: {argv[0]} has task {task!r}; this recipe runs "
                  "task: image_classification (tl-hf run runs any task)", file=sys.stderr)
            sys.exit(2)
    sys.exit(main(["run", *argv], prog="image_classification.py"))
