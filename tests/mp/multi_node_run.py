"""``tl-hf run`` for tests/test_multi_node.py, launched on each "node" by ``accelerate launch``.

With ``TL_HF_TEST_CRASH_AT=N`` every process dies (``os._exit(9)``, no cleanup, like a SIGKILL) right after the
checkpoint of step N is complete (``on_save``), so the relaunch must resume from it. The hook is test-only: it adds a
callback to the run template's callback list."""

from __future__ import annotations

import os
import sys

from transformers import TrainerCallback

import tl_hf.run.template as template
from tl_hf.cli import main

CRASH_AT = int(os.environ.get("TL_HF_TEST_CRASH_AT", "0"))


class CrashAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == CRASH_AT:
            sys.stdout.flush()
            os._exit(9)


if CRASH_AT:
    _callbacks_for = template.callbacks_for
    template.callbacks_for = lambda cfg: [*_callbacks_for(cfg), CrashAfterSave()]

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], prog="multi_node_run.py"))
