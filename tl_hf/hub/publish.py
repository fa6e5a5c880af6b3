"""Hub pushes: :func:`push` (a :class:`~tl_hf.TransferTrainer` run: save locally, write the card, then
``trainer.push_to_hub``) and :func:`push_folder` (one commit of a saved model folder plus extra folders such as the
per-task heads of a continual run). Both fail fast with :class:`HubUnavailableError` when offline or when the Hub
cannot be reached (the model stays saved locally), map network failures during the upload to it, and never upload a
token (:mod:`tl_hf.hub.tokens`).

How to push (recommended)::

    args = TrainingArguments(output_dir="out/run1", push_to_hub=False, ...)   # keep push_to_hub False
    trainer = TransferTrainer(model, args, ...)
    trainer.train()
    tl_hf.hub.push(trainer, repo_id="me/run1", dataset_name="sst2", results=trainer.evaluate())

``TrainingArguments(push_to_hub=True)`` makes ``Trainer.__init__`` call ``create_repo`` over the network (so building
the trainer fails offline) and, with ``hub_strategy`` other than ``"end"``, pushes during training with the Trainer's
own code path -- which uploads ``training_args.bin`` pickled *with* ``hub_token`` in it. Keep it False and call
:func:`push` after training; :func:`push` sets ``trainer.args.hub_model_id`` from ``repo_id``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Mapping

from tl_hf import _hub_access
from tl_hf._errors import one_line
from tl_hf.hub.cards import write_model_card
from tl_hf.hub.tokens import args_without_token, check_no_tokens, files_to_upload, known_tokens, scrub_tokens

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


def _unavailable(output_dir: str, repo: str | None, why: str) -> HubUnavailableError:
    why = one_line(scrub_tokens(str(why)))
    if len(why) > 200:
        why = why[:197] + "..."
    where = f" to {repo}" if repo else ""
    return HubUnavailableError(
        f"cannot push{where}: the Hugging Face Hub is unavailable ({why}); the trained model stays saved locally at "
        f"{output_dir} -- push it later with `hf upload {repo or '<repo_id>'} {output_dir}` (or tl_hf.hub.push) "
        + ("with HF_HUB_OFFLINE unset" if _hub_access.offline() else "once the Hub is reachable")
    )


@contextlib.contextmanager
def _no_card_lookups():
    """The Trainer's card (``TrainingSummary``) looks the base model up on the Hub unless offline: skip that."""
    try:
        import transformers.modelcard as mc
    except ImportError:  # pragma: no cover
        yield
        return
    saved = getattr(mc, "is_offline_mode", None)
    if saved is None:  # pragma: no cover - another transformers version
        yield
        return
    mc.is_offline_mode = lambda: True
    try:
        yield
    finally:
        mc.is_offline_mode = saved


def _value(v) -> str:
    return str(getattr(v, "value", v))


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


def _warn_if_trainer_pushes(args) -> None:
    if args.push_to_hub and args.hub_token and _value(args.hub_strategy) != "end" \
            and _value(args.save_strategy) != "no":
        logger.warning("TrainingArguments(push_to_hub=True, hub_strategy=%r) makes the Trainer push checkpoints "
                       "during training with training_args.bin pickled *with* hub_token; set push_to_hub=False and "
                       "call tl_hf.hub.push after training instead", _value(args.hub_strategy))


def push(trainer, *, repo_id: str | None = None, commit_message: str = "End of training", token: str | None = None,
         private: bool | None = None, revision: str | None = None, blocking: bool = True,
         dataset_name: str | None = None, results: Mapping[str, Any] | None = None, eval_results=None,
         connect_timeout: float = 5.0, **card_kwargs):
    """Save the model in ``output_dir``, write the model card, and push ``output_dir`` to the Hub.

    Works for full models and PEFT adapters (``Trainer.save_model`` saves only the adapter for a ``PeftModel``).

    Args:
        repo_id: the Hub repo (``"name"`` or ``"namespace/name"``); sets ``trainer.args.hub_model_id``. Default:
            ``args.hub_model_id``, else the output_dir's name (as ``Trainer.push_to_hub``).
        token: a write token. Default: ``args.hub_token``, then ``$HF_TOKEN`` / the saved login. It is sent in the
            request headers only: ``training_args.bin`` is saved without ``hub_token`` and the card is scrubbed.
        dataset_name, results, eval_results, card_kwargs: as in :func:`write_model_card`.
        connect_timeout: seconds for the TCP pre-check of the Hub endpoint.

    Returns what ``Trainer.push_to_hub`` returns (a ``CommitInfo``, or a ``Future`` if ``blocking=False``).

    Raises:
        HubUnavailableError: offline (``HF_HUB_OFFLINE=1``) or the Hub unreachable; raised quickly (no retries),
            after the model and card have been saved locally.
        TokenLeakError: a file that would be uploaded contains a token (nothing is uploaded).
    """
    args = trainer.args
    repo = _target_repo(trainer, repo_id)
    token = token if token is not None else args.hub_token
    secrets = known_tokens(trainer, [token])
    output_dir = os.path.abspath(args.output_dir)
    card = dict(dataset_name=dataset_name, results=results, eval_results=eval_results)
    # 1. local first: the model and training_args.bin (saved without hub_token) survive any network failure.
    #    Every process takes part (sharded / FSDP saves are collective); only the main one writes and uploads.
    _warn_if_trainer_pushes(args)
    with args_without_token(trainer, [token]):
        trainer.save_model(_internal_call=True)  # _internal_call: with args.push_to_hub, no Trainer push of its own
    if not trainer.is_world_process_zero():
        return None
    # 2. fail fast when the Hub cannot be reached (huggingface_hub would retry uploads for ~20 s); the card is
    #    still written, without the Trainer's Hub look-ups
    why = _why_unavailable(connect_timeout)
    if why is not None:
        with _no_card_lookups(), args_without_token(trainer, [token]):
            write_model_card(trainer, **card, **card_kwargs)
        raise _unavailable(output_dir, repo, why)
    with args_without_token(trainer, [token]):
        write_model_card(trainer, **card, **card_kwargs)
    check_no_tokens(args.output_dir, secrets)

    # 3. Trainer.push_to_hub: create_repo, save_model (done above: skipped), create_model_card (ours), upload_folder
    def create_model_card(**kwargs):
        write_model_card(trainer, **card, **kwargs)
        check_no_tokens(args.output_dir, secrets)  # a last look at what upload_folder is about to send

    trainer.create_model_card = create_model_card
    trainer.save_model = lambda *a, **k: None
    try:
        with args_without_token(trainer, [token]), _network_errors(output_dir, repo):
            return trainer.push_to_hub(commit_message=commit_message, blocking=blocking, token=token,
                                       revision=revision, private=private, **card_kwargs)
    finally:
        del trainer.create_model_card, trainer.save_model


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
    secrets = known_tokens(None, [token])
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
