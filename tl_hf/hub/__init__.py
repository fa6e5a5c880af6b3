"""Hub support for tl_hf runs: model cards, token safety and pushes.

* :func:`transfer_card_section` / :func:`write_model_card` (:mod:`tl_hf.hub.cards`) -- the card of a
  :class:`~tl_hf.TransferTrainer` run: the Trainer's own card plus a "Transfer learning" section, ``model-index`` and
  tags. Works offline.
* :func:`continual_card_section` / :func:`write_continual_model_card` (:mod:`tl_hf.hub.continual_card`) -- the card
  of a continual-learning run, built from its summary.
* :func:`push` / :func:`push_folder` (:mod:`tl_hf.hub.publish`) -- pushes that fail fast with
  :class:`HubUnavailableError` when the Hub cannot be reached (the model stays saved locally).
* :func:`scrub_tokens` / :class:`TokenLeakError` (:mod:`tl_hf.hub.tokens`) -- no card or upload ever carries a token
  (`TrainingArguments.hub_token` is refused; tokens come from `$HF_TOKEN` or `hf auth login`).
"""

from tl_hf.hub.cards import SECTION_END, SECTION_START, transfer_card_section, write_model_card
from tl_hf.hub.continual_card import (CONTINUAL_SECTION_END, CONTINUAL_SECTION_START, continual_card_section,
                                      write_continual_model_card)
from tl_hf.hub.publish import HubUnavailableError, push, push_folder
from tl_hf.hub.tokens import TokenLeakError, scrub_tokens

__all__ = ["HubUnavailableError", "TokenLeakError", "push", "scrub_tokens", "transfer_card_section",
           "write_model_card", "SECTION_START", "SECTION_END", "continual_card_section", "write_continual_model_card",
           "push_folder", "CONTINUAL_SECTION_START", "CONTINUAL_SECTION_END"]
