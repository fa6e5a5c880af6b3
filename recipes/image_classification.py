"""Fine-tune an image classifier (ViT family) with TransferTrainer from a YAML config (the same code path as
``tl-hf run``; a config of another task is refused).

    python recipes/image_classification.py recipes/configs/hymenoptera_vit.yaml [key=value ...]

Flow (tl_hf.run.tasks.image_classification.run_image_classification through tl_hf.run.template.run_classification):
config -> model config (fails fast offline) -> data (tl_hf.run.data.images: image folders or MNIST, seeded subsets,
unreadable files skipped or reported) -> model -> TransferTrainer (LLRD, freezing) -> train -> evaluate ->
all_results.json, eval_predictions.jsonl, confusion_matrix.png.
"""

import sys

from tl_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], prog="image_classification.py", task="image_classification"))
