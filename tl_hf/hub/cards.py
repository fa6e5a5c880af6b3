"""The model card of a :class:`~tl_hf.TransferTrainer` run: ``TransferTrainer.create_model_card`` (the standard
Trainer path, so ``trainer.push_to_hub()`` and ``push_to_hub=True`` write it) built by :mod:`tl_hf.core.model_card`;
re-exported here with :func:`write_model_card`, its one-call form."""

from __future__ import annotations

import os

from tl_hf.core.model_card import SECTION_END, SECTION_START, freezing_lines, llrd_lines, transfer_card_section

__all__ = ["SECTION_END", "SECTION_START", "freezing_lines", "llrd_lines", "transfer_card_section", "write_model_card"]


def write_model_card(trainer, **card_kwargs) -> str | None:
    """``trainer.create_model_card(**card_kwargs)`` (``dataset``, ``dataset_name``, ``results``, ``eval_results``,
    ``base_model`` and the Trainer's own card arguments); returns ``output_dir/README.md``, or ``None`` on processes
    other than the main one."""
    if not trainer.is_world_process_zero():
        return None
    trainer.create_model_card(**card_kwargs)
    return os.path.join(trainer.args.output_dir, "README.md")
