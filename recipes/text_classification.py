"""Fine-tune a text classifier with TransferTrainer from a YAML config (the same code path as ``tl-hf run``).

    python recipes/text_classification.py recipes/configs/sst2_minilm_llrd.yaml [key=value ...]

Flow (tl_hf.run.tasks.text_classification.run_text_classification through tl_hf.run.template.run_classification):
config -> data (tl_hf.run.data.text: load, map columns, subset, tokenize) -> model -> TransferTrainer (LLRD groups,
freezing) -> train -> evaluate (offline metrics) -> all_results.json.
"""

import sys

from tl_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], prog="text_classification.py"))
