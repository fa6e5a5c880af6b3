"""``save_on_each_node=True`` (nodes without a shared filesystem): every node's local main process writes a full,
resumable copy of each checkpoint and of the final model to its own ``output_dir``.

transformers 5.24 trap, measured with 2 "nodes" in tests/test_multi_node.py: ``PreTrainedModel.save_pretrained``
writes only where the ``torch.distributed`` rank is 0 (``should_save_on_this_rank`` in
transformers/distributed/mixin.py), whatever its ``is_main_process`` argument says. The Trainer asks every node's
local main process to save (``args.should_save``), so node 1's checkpoints got the optimizer, scheduler, RNG state and
tl_hf's own state but no ``config.json`` / ``model.safetensors``, and its resume failed ("Can't find a valid
checkpoint"). :class:`SaveOnEachNodeMixin` lets the model write where ``args.should_save`` says, only while the
Trainer saves it, only with ``save_on_each_node``. With ``save_on_each_node=False`` nothing changes: only the global
main process writes."""

from __future__ import annotations

import contextlib

__all__ = ["SaveOnEachNodeMixin", "weights_where_should_save"]


def _writes_where_told(is_main_process: bool) -> bool:
    return is_main_process


@contextlib.contextmanager
def weights_where_should_save(trainer):
    """Within the block, ``save_pretrained`` of ``trainer``'s model writes on this process when it is a saving process
    of a ``save_on_each_node`` run (a no-op otherwise)."""
    args = trainer.args
    if not (getattr(args, "save_on_each_node", False) and args.should_save):
        yield
        return
    unwrapped = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    models = [m for m in {id(m): m for m in (trainer.model, unwrapped)}.values()
              if hasattr(m, "should_save_on_this_rank") and "should_save_on_this_rank" not in vars(m)]
    for m in models:
        m.should_save_on_this_rank = _writes_where_told  # an instance attribute: it shadows the method
    try:
        yield
    finally:
        for m in models:
            vars(m).pop("should_save_on_this_rank", None)


class SaveOnEachNodeMixin:
    """The Trainer's ``_save`` (model weights, config, tokenizer) inside :func:`weights_where_should_save`."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        with weights_where_should_save(self):
            super()._save(output_dir, state_dict)
