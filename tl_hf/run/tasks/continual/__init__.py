"""Continual learning from a config: ``task: continual`` for ``tl-hf run`` and ``recipes/continual.py``.

One model is trained on tasks T1..Tn in order with :class:`~tl_hf.continual.ContinualRunner` (the regularizers of the
``regularizers`` section, LLRD and freezing carried across tasks; the ``training`` section gives every task's
``TrainingArguments``), and after each task every task seen so far is evaluated. Outputs under
``training.output_dir``: ``accuracy_matrix.json`` / ``accuracy_matrix.png`` (from the runner), ``all_results.json``
(ACC, BWT, forgetting, the matrix, per-task numbers), ``run_config.json``, one Trainer folder per task, ``heads/``
(one classifier per task, task-incremental only), ``continual_state/`` (what a resume needs, below) and, with
``model.save_model`` or ``hub.push``, ``model/`` (the final weights and a ``README.md`` model card).

Two kinds of task sequence (``data.kind``):

* ``text`` -- a list of text-classification datasets (``data.tasks``): built-in names (``trec``, ``emotion``,
  ``sst2``) or mappings ``{name, dataset | train_file + eval_file, text_column, label_column, ...}``, tokenized with
  the model's tokenizer; the model is ``AutoModelForSequenceClassification`` from ``model.name_or_path``.
  Label sets may differ between tasks; how they meet the head depends on the scenario:

  - ``task_incremental``: one head sized to the largest label set; each task keeps its own label ids ``0..k-1`` and
    its own copy of the head weights (the runner swaps them). Prediction is the argmax over the whole head, so a task
    with fewer classes than the head also has to learn to keep the unused outputs low (it does after a few steps).
  - ``class_incremental``: one shared head over the union of all label sets, in task order: task ``t``'s labels are
    offset by the sizes of the tasks before it (TREC 0-5, emotion 6-11, SST-2 12-13; head = the sum).
  - ``domain_incremental``: one shared head; every task must have the same label names (same set; ids follow the
    first task's order). Anything else is an error naming the tasks and their label sets.

* ``mnist`` -- Split-MNIST from the local MNIST test set (:func:`~tl_hf.continual.split_mnist_tasks`; one task per
  digit pair in ``data.pairs``, a non-standard split carved out of t10k). ``model.name_or_path`` is either

  - ``mlp`` (or ``mlp:HIDDEN``): a small MLP built here, ``784 -> HIDDEN -> HIDDEN -> head`` with ReLU (HIDDEN
    defaults to 256), seeded with ``training.seed``, with the layer map ``embed -> embeddings``, ``blocks.i ->
    block i``, the rest -> ``head`` (so LLRD and freezing work on it); it is saved as ``model.safetensors`` when
    ``model.save_model`` is set; or
  - a local ``AutoModelForImageClassification`` directory whose model takes grey 1 x 28 x 28 images
    (``num_channels: 1``, and ``image_size: 28`` where the config has one), e.g. a small ViT with patch size 7.

  Labels: the digit itself in ``class_incremental`` (head = largest digit + 1), the position in the pair (0 / 1) in
  the two other scenarios (head = largest pair size).

``data.replay_source`` (``class_incremental`` or ``domain_incremental``, needs a ``replay`` regularizer): data whose
examples are offered to the replay memory *before task 1*, standing in for the pre-training data (memory then holds a
mix of it and of every finished task, as the replay ``selection`` decides; replay already mixes memory into task 1;
``all_results.json`` counts the memory's examples per origin in ``replay_memory.by_source``, the source as
``replay_source:<name>``). A budget larger than the source is refused. ``task_incremental`` refuses it: replayed
examples would be trained through the current task's head with labels of another head (the runner refuses replay
there for the same reason).

* ``kind: text``: a dataset -- a built-in name or a mapping ``{dataset | train_file, split, text_column,
  label_column, max_samples}``. ``class_incremental``: its labels get their own block of the shared head, after every
  task's block (TREC + emotion + an SST-2 source: 0-5, 6-11, 12-13); those outputs take part in every prediction but
  no task evaluates them. It may not be one of the tasks' datasets (that would give the same classes two ids).
  ``domain_incremental``: it must have the tasks' label names (another domain of the same problem).
* ``kind: mnist``: a mapping with exactly one of

  - ``digits: [8, 9]`` -- MNIST t10k images of digits that no task uses (a digit of a task is refused: the source
    would share images, even eval images, with it). Labels: the digits themselves in ``class_incremental`` (the head
    grows to the largest digit + 1); the position in the list in ``domain_incremental``, which needs as many digits
    as each task's group.
  - ``imagefolder: DIR`` -- class subfolders of image files (any format Pillow reads; relative paths are looked up
    under the data root first, then the current directory), each image flattened to RGB, converted to grey (ITU-R
    601-2 luma) and resized to 28 x 28 (bilinear, the whole image), as floats in [0, 1] like the tasks' images.
    ``class_incremental`` only: its classes (sorted folder names) get their own block after the tasks' labels.

  and optionally ``max_samples`` (a seeded random sample; default all) and ``name`` (default ``mnist_digits_8_9`` /
  the folder's name). Other keys are refused with the closest valid key suggested.

Resume: a run interrupted at any point continues when it is started again with the same ``training.output_dir``
and the same config. After each finished task the runner writes ``continual_state/after_task<k>/`` atomically
(JSON + safetensors, never pickle): the rows of the accuracy matrix so far, the train metrics, the model weights and
which parameters are frozen, the per-task heads, and every regularizer's state (EWC / online EWC Fisher and anchors,
L2-SP anchors, the replay memory with its provenance and RNG). The rerun logs ``resuming after task k/n``, restores
it all (the replay source is not offered again) and goes on with task ``k+1``, giving the same accuracy matrix and
weights as an uninterrupted run. An interrupted task whose folder holds ``checkpoint-*`` folders
(``training.save_strategy: steps``) resumes from the newest one through the Trainer's ``resume_from_checkpoint``
(TransferTrainer restores its own state from it). ``continual_state/run.json`` records the config at the start; a
rerun whose config differs in anything but output / logging settings (``data.root``, ``model.save_model``,
``hub``, ``training.output_dir / logging_* / save_* / report_to / disable_tqdm / per_device_eval_batch_size /
dataloader_*``...) is refused with a one-line error naming the differences -- use a fresh ``training.output_dir``
or delete the old one to start over (as with the text recipe's checkpoints; transformers 5 has no
``overwrite_output_dir``). An earlier run that finished no task and left no checkpoint has nothing to resume: a
changed config then simply starts over. A truncated or corrupt state file is named in a one-line error.
``training.resume_from_checkpoint`` is refused (resuming is automatic).

Model card and push: with ``model.save_model`` or ``hub.push`` the final model is saved in ``output_dir/model`` with
a ``README.md`` (:func:`tl_hf.hub.write_continual_model_card`): base model, scenario, the task sequence with data
sizes, LLRD and freezing, the regularizers and their strengths, the accuracy matrix, ACC / BWT / forgetting, and
``model-index`` results (the final accuracy on every task); tokens are never written. ``hub.push: true`` then uploads
``model/`` (and ``heads/`` for task-incremental runs, as ``heads/`` in the repo) in one commit to ``hub.repo_id`` at
$HF_ENDPOINT (:func:`tl_hf.hub.push_folder`); offline (``HF_HUB_OFFLINE=1``) or with the Hub unreachable it fails at
once with :class:`~tl_hf.hub.HubUnavailableError`, after every output (the model included) is saved locally. Only the
main process saves the model, writes the card and pushes.

Unsupported here (each is a clear error): ``peft.enabled``, ``early_stopping.patience > 0``, ``training.eval_strategy``
other than ``no`` (the runner evaluates every task itself), ``training.resume_from_checkpoint``. ``strategy: auto``
chooses freezing and LLRD from the size of task 1's training set.

Modules: :mod:`~tl_hf.run.tasks.continual.config` (the ``data`` section and its sources),
:mod:`~tl_hf.run.tasks.continual.data` (text tasks; shared checks), :mod:`~tl_hf.run.tasks.continual.mnist`
(Split-MNIST and image replay sources), :mod:`~tl_hf.run.tasks.continual.model`,
:mod:`~tl_hf.run.tasks.continual.run` (the run) and :mod:`~tl_hf.run.tasks.continual.outputs` (results, model card,
push).
"""

from tl_hf.run.tasks.continual.config import (DEFAULT_PAIRS, DEFAULT_TEXT_TASKS, KINDS, ContinualDataConfig,
                                              ImageSource, TextSource)
from tl_hf.run.tasks.continual.model import MLP_LAYER_MAP, build_mlp
from tl_hf.run.tasks.continual.run import STATE_DIR, resume_fingerprint, run_continual_recipe
from tl_hf.run.tasks.registry import register_task

__all__ = ["ContinualDataConfig", "DEFAULT_PAIRS", "DEFAULT_TEXT_TASKS", "ImageSource", "KINDS", "MLP_LAYER_MAP",
           "STATE_DIR", "TextSource", "build_mlp", "resume_fingerprint", "run_continual_recipe"]

register_task("continual", ContinualDataConfig, run_continual_recipe,
              "continual learning over a sequence of text tasks or Split-MNIST digit pairs: accuracy matrix, "
              "ACC / BWT / forgetting")
