"""Continual learning from a YAML config (the same code path as ``tl-hf run`` with ``task: continual``).

    python recipes/continual.py recipes/configs/continual_mnist_pairs.yaml [key=value ...]
    python recipes/continual.py recipes/configs/continual_text_minilm.yaml [key=value ...]

Flow (tl_hf.run.tasks.continual.run.run_continual_recipe): config -> task sequence (text datasets tokenized with the
model's tokenizer, or Split-MNIST digit pairs) -> model -> ContinualRunner (TransferTrainer per task, regularizers
carried across tasks, every seen task evaluated after each task) -> accuracy_matrix.json/png + all_results.json (ACC,
BWT, forgetting) under training.output_dir.
"""

import sys

from tl_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], prog="continual.py"))
