"""Task modules: each fills in the run template with its data, model and metrics.

Importing this package registers the built-in tasks; a new task is a module that calls
:func:`~tl_hf.run.tasks.registry.register_task`, imported here.
"""

from tl_hf.run.tasks import continual, image_classification, text_classification  # noqa: F401  (they register)
from tl_hf.run.tasks import question_answering  # noqa: F401  (registers)
from tl_hf.run.tasks import text_multilabel  # noqa: F401  (registers)
from tl_hf.run.tasks import token_classification  # noqa: F401  (registers)
from tl_hf.run.tasks.registry import TASKS, TaskSpec, register_task

__all__ = ["TASKS", "TaskSpec", "register_task"]
