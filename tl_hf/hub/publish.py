"""Hub pushes: :func:`push` (a :class:`~tl_hf.TransferTrainer` run, through the standard ``trainer.push_to_hub()``:
its ``create_model_card`` override writes the transfer card) and :func:`push_folder` (one commit of a saved model
folder plus extra folders such as the per-task heads of a continual run). Both fail fast with
:class:`HubUnavailableError` when offline or when the Hub cannot be reached (the model stays saved locally), map
network failures during the upload to it, and never upload a token (:mod:`tl_hf.hub.tokens`).

How to push::

    trainer = TransferTrainer(model, TrainingArguments(output_dir="out/run1", ...), ...)
    trainer.train()
    tl_hf.hub.push(trainer, repo_id="me/run1", dataset="stanfordnlp/sst2", results=trainer.evaluate())
    # or, equally: trainer.push_to_hub(dataset="stanfordnlp/sst2"); or TrainingArguments(push_to_hub=True, ...)

The token comes from ``$HF_TOKEN`` / ``hf auth login`` (or ``token=``); ``TrainingArguments.hub_token`` is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Mapping

from tl_hf import _hub_access
from tl_hf._errors import one_line
from tl_hf.hub.tokens import TokenLeakError, check_no_tokens, files_to_upload, known_tokens, scrub_tokens

logger = logging.getLogger(__name__)

__all__ = ["HubUnavailableError", "push", "push_folder"]


class HubUnavailableError(RuntimeError):
    """The Hub cannot be reached (offline mode, no network, endpoint down). The model is saved locally."""


def _unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        from huggingface_hub.errors import OfflineModeIsEnabled

        types.append(OfflineModeIsEnabled)
    except ImportError:  # pragma: no cover
        pass
    for mod in ("httpx2", "httpx"):
        try:
            m = __import__(mod)
            types += [m.TransportError]  # ConnectError, ConnectTimeout, ReadTimeout, NetworkError, ProxyError...
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        types += [requests.ConnectionError, requests.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


@contextlib.contextmanager
def _network_errors(folder: str, repo: str | None):
    """Turn a failure to reach the Hub (also when huggingface_hub wraps it in its own error) into
    :class:`HubUnavailableError` naming the repo and the folder where the model stays saved."""
    try:
        yield
    except _unavailable_types() as exc:
        raise _unavailable(folder, repo, f"{type(exc).__name__}: {exc}") from None
    except HubUnavailableError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and isinstance(cause, _unavailable_types()):
            raise _unavailable(folder, repo, f"{type(cause).__name__}: {cause}") from None
        raise


def _later(output_dir: str, repo: str | None) -> str:
    """How to push ``output_dir`` later -- or, when a file there holds a token, what to remove first."""
    try:
        check_no_tokens(output_dir, known_tokens())
    except TokenLeakError as exc:
        return f"do not upload it as it is: {exc}"
    return (f"push it later with `hf upload {repo or '<repo_id>'} {output_dir} --exclude 'checkpoint-*' "
            "--exclude '_*'` (or tl_hf.hub.push)")


def _unavailable(output_dir: str, repo: str | None, why: str) -> HubUnavailableError:
    why = one_line(scrub_tokens(str(why), known_tokens()))
    if len(why) > 200:
        why = why[:197] + "..."
    where = f" to {repo}" if repo else ""
    when = "with HF_HUB_OFFLINE unset" if _hub_access.offline() else "once the Hub is reachable"
    return HubUnavailableError(f"cannot push{where}: the Hugging Face Hub is unavailable ({why}); the trained model "
                               f"stays saved locally at {output_dir} -- {_later(output_dir, repo)} {when}")


def _why_unavailable(timeout: float) -> str | None:
    """Why a push cannot reach the Hub now (offline mode, or no TCP connection within ``timeout`` s), or ``None``."""
    if _hub_access.offline():
        return "offline mode is enabled (HF_HUB_OFFLINE=1)"
    return _hub_access.unreachable_reason(timeout)


def _target_repo(trainer, repo_id: str | None) -> str:
    """The repo a push goes to: ``repo_id`` (set as ``args.hub_model_id``), else ``args.hub_model_id``, else the
    output folder's name."""
    args = trainer.args
    if repo_id is not None:
        if trainer.hub_model_id is not None and trainer.hub_model_id != repo_id \
                and not trainer.hub_model_id.endswith("/" + repo_id):
            trainer.hub_model_id = None  # pushing somewhere else: create that repo first
        args.hub_model_id = repo_id
    return args.hub_model_id or Path(args.output_dir).absolute().name


def push(trainer, *, repo_id: str | None = None, commit_message: str = "End of training", token: str | None = None,
         private: bool | None = None, revision: str | None = None, blocking: bool = True,
         connect_timeout: float = 5.0, **card_kwargs):
    """``trainer.push_to_hub(...)`` that fails fast: save the model in ``output_dir``, write the model card
    (``TransferTrainer.create_model_card``) and upload ``output_dir``. Full models and PEFT adapters.

    Args:
        repo_id: the Hub repo (``"name"`` or ``"namespace/name"``); sets ``trainer.args.hub_model_id``. Default:
            ``args.hub_model_id``, else the output_dir's name (as ``Trainer.push_to_hub``).
        token: a write token; default ``$HF_TOKEN`` / the saved login. Sent in the request headers only.
        card_kwargs: ``create_model_card`` arguments (``dataset``, ``dataset_name``, ``results``, ``eval_results``,
            ``base_model``, ``language``, ``license``, ``tags``, ...).
        connect_timeout: seconds for the TCP pre-check of the Hub endpoint.

    Returns what ``Trainer.push_to_hub`` returns (a ``CommitInfo``, or a ``Future`` if ``blocking=False``).

    Raises:
        HubUnavailableError: offline (``HF_HUB_OFFLINE=1``) or the Hub unreachable; raised quickly (no retries),
            after the model and card have been saved locally.
        TokenLeakError: a file that would be uploaded contains a token (nothing is uploaded).
    """
    repo = _target_repo(trainer, repo_id)
    output_dir = os.path.abspath(trainer.args.output_dir)
    why = _why_unavailable(connect_timeout)
    if why is not None:  # local first: the model and its card survive; huggingface_hub would retry for ~20 s
        trainer.save_model(_internal_call=True)
        trainer.create_model_card(**card_kwargs)
        raise _unavailable(output_dir, repo, why)
    if trainer.is_world_process_zero() and os.path.isdir(output_dir):
        check_no_tokens(output_dir, known_tokens([token]))  # what is there already; the Trainer adds no token
    with _network_errors(output_dir, repo):
        return trainer.push_to_hub(commit_message=commit_message, blocking=blocking, token=token, revision=revision,
                                   private=private, **card_kwargs)


def push_folder(folder: str, *, repo_id: str, private: bool | None = None, token: str | None = None,
                revision: str | None = None, commit_message: str = "Upload model",
                extra_folders: Mapping[str, str] | None = None, connect_timeout: float = 5.0):
    """Upload ``folder`` (everything but ``_*`` and ``checkpoint-*``, as ``Trainer.push_to_hub`` does) and every
    ``extra_folders`` entry (``{path in the repo: local folder}``, e.g. ``{"heads": ".../heads"}``) to the Hub repo
    ``repo_id`` ($HF_ENDPOINT) in one commit, creating the repo if needed. Used for runs without a single Trainer
    (the continual recipe); the token goes in the request headers only.

    Raises :class:`HubUnavailableError` at once when offline (``HF_HUB_OFFLINE=1``) or when the endpoint cannot be
    reached (the folder stays as it is), :class:`TokenLeakError` (nothing uploaded) if a file to upload contains a
    known token. Returns the ``CommitInfo``."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot push {folder}: no such folder")
    extras = {str(k).strip("/"): os.path.abspath(v) for k, v in (extra_folders or {}).items()}
    for prefix, path in extras.items():
        if not prefix or not os.path.isdir(path):
            raise FileNotFoundError(f"cannot push {path} as {prefix!r}: no such folder (or an empty path in the repo)")
    why = _why_unavailable(connect_timeout)
    if why is not None:
        raise _unavailable(folder, repo_id, why)
    secrets = known_tokens([token])
    for f in [folder, *extras.values()]:
        check_no_tokens(f, secrets)
    from huggingface_hub import CommitOperationAdd, HfApi

    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
           for p in sorted(files_to_upload(folder))]
    for prefix, path in extras.items():
        ops += [CommitOperationAdd(path_in_repo=f"{prefix}/{p.relative_to(path).as_posix()}", path_or_fileobj=str(p))
                for p in sorted(files_to_upload(path))]
    with _network_errors(folder, repo_id):
        api = HfApi(endpoint=_hub_access.endpoint())
        url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.create_commit(url.repo_id, operations=ops, commit_message=commit_message, token=token,
                                 revision=revision)
