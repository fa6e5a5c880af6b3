"""Resume of a continual run: the state folders, run fingerprints and the :class:`ResumableRun` mixin.

``state_dir/run.json`` says what the run is (the runner's fingerprint and the caller's ``config``); after every
finished task ``state_dir/after_task<k>/`` holds ``state.json`` (rows of ``R``, train metrics, frozen parameters),
``model.safetensors``, ``heads.safetensors`` (task-incremental) and ``regularizers/``, written in a temporary folder
and renamed (never pickle).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

from tl_hf._errors import one_line
from tl_hf.continual.tasks import task_dir_name
from tl_hf.core.state import (CorruptStateError, atomic_write_json, file_problem, fingerprint_differences,
                              short_value, validate_checkpoint)

logger = logging.getLogger(__name__)

__all__ = ["ResumableRun", "ResumeMismatchError", "check_state_fingerprint", "fingerprint_differences"]

STATE_FORMAT = 1
RUN_FILE = "run.json"
STATE_JSON = "state.json"
MODEL_FILE = "model.safetensors"
HEADS_FILE = "heads.safetensors"
_STATE_DIR = re.compile(r"^after_task(\d+)$")
_START_OVER = "use a fresh training.output_dir, or delete {out} to start over"


class ResumeMismatchError(ValueError):
    """The state in an output folder was written by a different run (tasks, scenario, regularizers, config)."""


def _state_folders(state_dir: str) -> list[tuple[int, str]]:
    """``[(k, folder)]`` of the complete ``after_task<k>`` folders, oldest first."""
    if not os.path.isdir(state_dir):
        return []
    out = []
    for d in os.listdir(state_dir):
        m = _STATE_DIR.match(d)
        if m and os.path.isdir(os.path.join(state_dir, d)):
            out.append((int(m.group(1)), os.path.join(state_dir, d)))
    return sorted(out)


def _read_state_json(path: str, output_dir: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {path} is truncated or corrupt "
                                f"({one_line(exc)[:120]}); {_START_OVER.format(out=output_dir)}") from None


def _check_state_files(folder: str, output_dir: str) -> None:
    """Every JSON file parses and every safetensors header reads; else a one-line error naming the file."""
    for dirpath, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            problem = file_problem(path)
            if problem:
                raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {path} is truncated or "
                                        f"corrupt ({problem}); "
                                        f"{_START_OVER.format(out=output_dir)}")
    if not os.path.exists(os.path.join(folder, STATE_JSON)) or not os.path.exists(os.path.join(folder, MODEL_FILE)):
        raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {folder} lacks {STATE_JSON} or "
                                f"{MODEL_FILE}; {_START_OVER.format(out=output_dir)}")


def _fsync_tree(folder: str, files: bool = True) -> None:
    """Flush a freshly written folder (its files, then the folder entry) before it is renamed into place."""
    if files:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _mismatch_message(output_dir: str, diffs: list[tuple[str, Any, Any]]) -> str:
    parts = []
    for key, old, new in diffs[:3]:
        key = key[len("config."):] if key.startswith("config.") else key.replace("runner.", "", 1)
        parts.append(f"{key} was {short_value(old)}, now {short_value(new)}")
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return (f"cannot resume the continual run in {output_dir}: it was started with a different setup "
            f"({'; '.join(parts)}{more}); {_START_OVER.format(out=output_dir)}")


def check_state_fingerprint(state_dir: str, output_dir: str, config: Mapping) -> None:
    """Before any slow step: if ``state_dir/run.json`` exists, its ``config`` fingerprint must equal ``config``
    (:class:`ResumeMismatchError` naming the differences otherwise). :meth:`ContinualRunner.restore` checks it all."""
    path = os.path.join(state_dir, RUN_FILE)
    if not os.path.exists(path):
        return
    saved = _read_state_json(path, output_dir)
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), dict):
        raise CorruptStateError(f"{path} is not a tl_hf continual run file; {_START_OVER.format(out=output_dir)}")
    now = json.loads(json.dumps(dict(config), default=str))
    diffs = fingerprint_differences({"config": saved["fingerprint"].get("config", {})}, {"config": now})
    if diffs and _has_progress(output_dir, state_dir):
        raise ResumeMismatchError(_mismatch_message(output_dir, diffs))


def _has_progress(output_dir: str, state_dir: str) -> bool:
    """Whether an earlier run left anything a resume would use: a finished task's state or a task checkpoint."""
    if _state_folders(state_dir):
        return True
    if not os.path.isdir(output_dir):
        return False
    for d in os.listdir(output_dir):
        sub = os.path.join(output_dir, d)
        if os.path.isdir(sub) and os.path.abspath(sub) != os.path.abspath(state_dir):
            if any(x.startswith("checkpoint-") and os.path.isdir(os.path.join(sub, x)) for x in os.listdir(sub)):
                return True
    return False


class ResumableRun:
    """The resume half of :class:`~tl_hf.continual.ContinualRunner` (it sets ``model``, ``tasks``, ``scenario``,
    ``output_dir``, ``state_dir``, ``fingerprint``, ``regularizers``, the heads and ``_restored``)."""

    def own_fingerprint(self) -> dict[str, Any]:
        """What this runner is, for ``run.json``: scenario, head, tasks (names, sizes, labels), regularizer configs."""
        regs = []
        for r in self.regularizers:
            conf = asdict(r.config) if is_dataclass(r.config) else dict(vars(r.config))
            regs.append({"name": r.name, **conf})
        fp = {"scenario": self.scenario, "num_labels": self.num_labels,
              "head_patterns": self.head_patterns if self.scenario == "task_incremental" else None,
              "tasks": [{"name": t.name, "train_examples": len(t.train), "eval_examples": len(t.eval),
                         "labels": list(labels)} for t, labels in zip(self.tasks, self.task_labels)],
              "regularizers": regs}
        return json.loads(json.dumps(fp, default=str))

    def restore(self) -> int:
        """With ``state_dir``: check that the folder belongs to this run and load the state of the last finished task.

        A fresh folder gets ``run.json`` (the fingerprints) and 0 is returned. Otherwise ``run.json`` must match this
        runner (:class:`ResumeMismatchError` naming the differences) and ``after_task<k>/`` -- model weights, heads,
        regularizer states, rows of ``R`` and train metrics -- is loaded (:class:`~tl_hf.core.state.CorruptStateError`
        naming a damaged file); returns ``k``, the number of finished tasks. :meth:`run` calls it; call it first to
        know where the run starts (e.g. to fill a replay memory only when starting fresh). Loads once.
        """
        if self._restored is not None:
            return self._restored[0]
        if self.state_dir is None:
            raise ValueError("restore() needs a runner built with state_dir=...")
        names = [t.name for t in self.tasks]
        n = len(names)
        main = self._args_for(0, self.tasks[0]).should_save
        self._check_run_file(main)
        if main:  # leftovers of a save that was interrupted before its rename
            for d in os.listdir(self.state_dir):
                if d.startswith("_tmp_"):
                    shutil.rmtree(os.path.join(self.state_dir, d), ignore_errors=True)
        found = _state_folders(self.state_dir)
        if not found:
            self._restored = (0, [], [])
            return 0
        k, folder = found[-1]
        if k > n:
            raise ResumeMismatchError(f"cannot resume the continual run in {self.output_dir}: {folder} holds the state "
                                      f"after task {k}, but this run has {n} tasks; "
                                      f"{_START_OVER.format(out=self.output_dir)}")
        rows, metrics = self._load_state(folder, k)
        self._restored = (k, rows, metrics)
        logger.info("resuming after task %d/%d (%s) from %s", k, n, names[k - 1], folder)
        return k

    def _check_run_file(self, main: bool) -> None:
        """``run.json`` must describe this run when an earlier one left progress; (re)written by the main process."""
        fp = {"runner": self.own_fingerprint()}
        if self.fingerprint is not None:
            fp["config"] = self.fingerprint
        run_file = os.path.join(self.state_dir, RUN_FILE)
        doc = {"format": STATE_FORMAT, "fingerprint": fp, "task_names": [t.name for t in self.tasks]}
        if not os.path.exists(run_file):
            self._check_no_foreign_checkpoints()
            if main:
                atomic_write_json(run_file, doc)
            return
        saved = _read_state_json(run_file, self.output_dir)
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or "fingerprint" not in saved:
            raise CorruptStateError(f"{run_file} is not a tl_hf continual run file (format {STATE_FORMAT}); "
                                    f"{_START_OVER.format(out=self.output_dir)}")
        diffs = fingerprint_differences(saved["fingerprint"], fp)
        if diffs and _has_progress(self.output_dir, self.state_dir):
            raise ResumeMismatchError(_mismatch_message(self.output_dir, diffs))
        if diffs:  # nothing was finished or checkpointed: nothing to mix, start this run instead
            logger.warning("%s: the earlier run (a different setup) finished no task and left no checkpoint; "
                           "starting over", self.output_dir)
            if main:
                atomic_write_json(run_file, doc)

    def _load_state(self, folder: str, k: int) -> tuple[list, list]:
        """Load ``after_task<k>/`` into the runner; returns the rows of ``R`` and the train metrics."""
        from safetensors.torch import load_model

        names = [t.name for t in self.tasks]
        _check_state_files(folder, self.output_dir)
        path = os.path.join(folder, STATE_JSON)
        doc = _read_state_json(path, self.output_dir)
        rows = doc.get("R") if isinstance(doc, dict) else None
        if (not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("completed") != k
                or doc.get("task_names") != names or not isinstance(rows, list) or len(rows) != k
                or any(not isinstance(r, list) or len(r) != len(names) for r in rows)
                or len(doc.get("train_metrics", [])) != k):
            raise CorruptStateError(f"{path} does not describe the state after task {k} of tasks {names}; "
                                    f"{_START_OVER.format(out=self.output_dir)}")
        mpath = os.path.join(folder, MODEL_FILE)
        device = next(self.model.parameters()).device
        missing, unexpected = load_model(self.model, mpath, strict=False, device=str(device))
        if missing or unexpected:
            raise ResumeMismatchError(f"cannot resume the continual run in {self.output_dir}: {mpath} does not fit "
                                      f"the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                                      f"{_START_OVER.format(out=self.output_dir)}")
        frozen = set(doc.get("frozen", []))
        for pname, param in self.model.named_parameters():
            param.requires_grad_(pname not in frozen)
        if self.scenario == "task_incremental":
            self._load_heads(os.path.join(folder, HEADS_FILE), k)
        self._load_regularizers(os.path.join(folder, "regularizers"))
        return rows, list(doc["train_metrics"])

    def _load_heads(self, hpath: str, k: int) -> None:
        from safetensors.torch import load_file

        names = [t.name for t in self.tasks]
        if not os.path.exists(hpath):
            raise CorruptStateError(f"cannot resume: {hpath} is missing (the per-task heads); "
                                    f"{_START_OVER.format(out=self.output_dir)}")
        t = load_file(hpath)

        def part(prefix):
            return {key[len(prefix):]: v for key, v in t.items() if key.startswith(prefix)}

        initial = part("initial/")
        heads = {names[j]: part(f"task{j}/") for j in range(k)}
        expected = set(self._head_params())
        if set(initial) != expected or any(set(h) != expected for h in heads.values()):
            raise CorruptStateError(f"{hpath} does not hold the head parameters {sorted(expected)} for the initial "
                                    f"head and tasks {names[:k]}; {_START_OVER.format(out=self.output_dir)}")
        self._initial_head, self.heads = initial, heads

    def _load_regularizers(self, rdir: str) -> None:
        for r in self.regularizers:
            try:
                r.load(rdir, prefix=f"tl_hf_reg_{r.name}")
            except (OSError, ValueError, KeyError) as exc:
                raise CorruptStateError(f"cannot resume: the {r.name} state in {rdir} is missing or damaged "
                                        f"({one_line(exc)[:200]}); "
                                        f"{_START_OVER.format(out=self.output_dir)}") from None

    def _save_state(self, k: int, R, train_metrics) -> str:
        """Write ``state_dir/after_task<k+1>/`` (via a temporary folder and a rename) and drop older states."""
        from safetensors.torch import save_file, save_model

        names = [t.name for t in self.tasks]
        os.makedirs(self.state_dir, exist_ok=True)
        final = os.path.join(self.state_dir, f"after_task{k + 1}")
        tmp = os.path.join(self.state_dir, f"_tmp_after_task{k + 1}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        save_model(self.model, os.path.join(tmp, MODEL_FILE), force_contiguous=True)
        if self.scenario == "task_incremental":
            heads = {f"initial/{p}": v for p, v in self._initial_head.items()}
            for j in range(k + 1):
                heads.update({f"task{j}/{p}": v for p, v in self.heads[names[j]].items()})
            save_file({key: v.detach().contiguous().cpu() for key, v in heads.items()}, os.path.join(tmp, HEADS_FILE))
        for r in self.regularizers:
            r.save(os.path.join(tmp, "regularizers"), prefix=f"tl_hf_reg_{r.name}")
        atomic_write_json(os.path.join(tmp, STATE_JSON), {
            "format": STATE_FORMAT, "completed": k + 1, "n_tasks": len(names), "task_names": names,
            "scenario": self.scenario, "R": [list(R[i]) for i in range(k + 1)], "train_metrics": train_metrics,
            "regularizers": [r.name for r in self.regularizers],
            "frozen": sorted(n for n, p in self.model.named_parameters() if not p.requires_grad)})
        _fsync_tree(tmp)
        if os.path.isdir(final):  # an earlier attempt at this task got as far as its rename
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_tree(self.state_dir, files=False)
        for j, old in _state_folders(self.state_dir):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _task_checkpoint(self, task_dir: str) -> str | None:
        """The newest complete ``checkpoint-*`` of an interrupted task (resumed by the Trainer), if any. A checkpoint
        whose save was interrupted (no ``trainer_state.json``, written last) is skipped; a damaged file is an error."""
        if not os.path.isdir(task_dir):
            return None
        found = sorted((int(m.group(1)), d) for d in os.listdir(task_dir)
                       if (m := re.fullmatch(r"checkpoint-(\d+)", d)) and os.path.isdir(os.path.join(task_dir, d)))
        for _, d in reversed(found):
            path = os.path.join(task_dir, d)
            if not os.path.exists(os.path.join(path, "trainer_state.json")):
                logger.warning("%s is incomplete (no trainer_state.json: its save was interrupted); skipping it", path)
                continue
            try:
                validate_checkpoint(path)
            except CorruptStateError as exc:
                why = str(exc).split("; resume from an earlier checkpoint")[0]
                raise CorruptStateError(f"{why}; delete {path} and rerun: the task then resumes from an earlier "
                                        "checkpoint (or from its start)") from None
            return path
        return None

    def _check_no_foreign_checkpoints(self) -> None:
        for k, t in enumerate(self.tasks):
            d = os.path.join(self.output_dir, task_dir_name(k, t.name))
            if os.path.isdir(d):
                found = sorted(x for x in os.listdir(d) if x.startswith("checkpoint-"))
                if found:
                    raise ResumeMismatchError(
                        f"{d} holds checkpoints ({', '.join(found[:3])}) but {self.state_dir} has no {RUN_FILE}: they "
                        "were not written by a resumable continual run (or its state was deleted), so resuming from "
                        f"them could mix two runs; {_START_OVER.format(out=self.output_dir)}")
