"""TransferTrainer: ``transformers.Trainer`` with layer-wise LR decay, freezing policies and gradual unfreezing."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping

import torch
from transformers import Trainer

from tl_hf._errors import did_you_mean, hub_token_refused
from tl_hf.core.averaging import AveragingConfig, WeightAverager, WeightAveragingCallback
from tl_hf.core.callbacks import GradualUnfreezingCallback, GroupLRRecorder, LossCheck, RegularizerBinder
from tl_hf.core.distributed_checks import check_deepspeed
from tl_hf.core.feature_cache_trainer import FeatureCacheMixin
from tl_hf.core.feature_layer import prepare_feature_layer
from tl_hf.core.freezing import FreezingConfig, FreezingController
from tl_hf.core.fsdp import check_fsdp, plain_replica
from tl_hf.core.layers import LayerMap, get_layer_map
from tl_hf.core.node_save import SaveOnEachNodeMixin
from tl_hf.core.optim import LLRDConfig, group_lrs, param_groups_layer_decay
from tl_hf.core.progress import progress_bars
from tl_hf.core.reinit import ReinitConfig, reinit_top_blocks
from tl_hf.core.trainer_state import CheckpointStateMixin, NonFiniteLossError, NonFiniteModelError
from tl_hf.regularizers import Regularizer, StepContext, build_regularizer

logger = logging.getLogger(__name__)

__all__ = ["TransferTrainer", "NonFiniteLossError", "NonFiniteModelError"]


class TransferTrainer(CheckpointStateMixin, FeatureCacheMixin, SaveOnEachNodeMixin, Trainer):
    """A ``transformers.Trainer`` for transfer learning.

    Args:
        llrd: :class:`LLRDConfig` (or a dict of its fields). The optimizer always holds every parameter of the model in
            one group per depth (``embeddings``, ``layer.i``, ``head``; split by weight decay), so freezing and
            unfreezing never change the optimizer's groups. Without ``llrd`` all depths share the base lr.
        freezing: :class:`FreezingConfig` (or a dict): ``full``, ``feature_extraction``, ``top_k``, ``patterns`` or
            ``gradual``. ``feature_extraction`` with ``cache_features=True`` computes the frozen backbone's outputs
            once, before the first step, and then trains the head on them (:mod:`tl_hf.core.feature_cache`).
        layer_map: a :class:`LayerMap` or rules ``{regex: depth | 'embeddings' | 'block' | 'head'}`` for a model that
            has no built-in map.
        stop_on_non_finite: raise :class:`NonFiniteLossError` (naming the step) when the loss becomes NaN/inf,
            instead of training on and saving a broken model.
        regularizers: forgetting regularizers (:mod:`tl_hf.regularizers` objects, or dicts ``{"name": "ewc", ...}``).
            Penalty gradients are added once per optimizer step, after the task loss's backward and before clipping;
            each penalty is logged as ``penalty/<name>``, apart from the task ``loss``.
        reinit: :class:`~tl_hf.core.reinit.ReinitConfig` (or a dict): re-initialise the top ``top_k`` blocks (and the
            pooler) with the model's own ``_init_weights`` before training, seeded identically on every process.
        averaging: :class:`~tl_hf.core.averaging.AveragingConfig` (or a dict): EMA or SWA of the trainable weights,
            used for evaluation and the saved model as configured, saved in every checkpoint.

    It also fixes the transformers 5.x loss scaling for models that ignore ``num_items_in_batch`` (BERT-style
    sequence classifiers): the loss is treated as a per-micro-batch mean and divided by the accumulation steps, so
    batch 8 x accumulation 1 and batch 4 x accumulation 2 give the same update, and DDP does not double the loss.
    Every log line carries ``lr/<group>`` for each depth and ``trainable_params``.
    """

    def __init__(self, model=None, args=None, *rest, llrd: LLRDConfig | Mapping | None = None,
                 freezing: FreezingConfig | Mapping | None = None,
                 layer_map: LayerMap | Mapping | None = None,
                 regularizers: list[Regularizer | Mapping] | None = None, stop_on_non_finite: bool = True,
                 reinit: ReinitConfig | Mapping | None = None, averaging: AveragingConfig | Mapping | None = None,
                 **kwargs) -> None:
        if model is None:
            raise ValueError("TransferTrainer needs a model instance (model_init is not supported: the layer map and "
                             "freezing policy are built from the model)")
        if kwargs.get("optimizers", (None, None))[0] is not None:
            raise ValueError("TransferTrainer builds its own LLRD optimizer; pass optimizer_cls_and_kwargs=(cls, kw) "
                             "to choose the optimizer class instead of optimizers=(opt, sched)")
        self.llrd = _coerce(llrd, LLRDConfig, "llrd") or LLRDConfig(decay=1.0)
        self.freezing = _coerce(freezing, FreezingConfig, "freezing") or FreezingConfig()
        self.reinit = _coerce(reinit, ReinitConfig, "reinit") or ReinitConfig()
        # freezing.feature_layer / feature_pooling (ViT family) change the model, so they come before the layer map
        self.feature_layer_note = prepare_feature_layer(model, self.freezing)
        # a model outside the architecture table needs a map only for what uses depths; without that it trains
        # like under Trainer, every parameter at one depth (get_layer_map logs it)
        self.layer_map = get_layer_map(model, layer_map, uses=depth_uses(self.llrd, self.freezing, self.reinit))
        self.layer_map.assign(model)  # every parameter must have a depth before anything else happens
        if self.reinit.enabled:  # before training; a resume then loads the checkpoint's weights over it
            reinit_top_blocks(model, self.reinit.top_k, pooler=self.reinit.pooler, seed=self.reinit.seed,
                              layer_map=self.layer_map)
        self.freezer = FreezingController(model, self.layer_map, self.freezing)
        self.regularizers = _build_regularizers(regularizers)
        self.averaging = _coerce(averaging, AveragingConfig, "averaging") or AveragingConfig()
        self.averager = WeightAverager(self.averaging, list(self.freezer.base_trainable)) \
            if self.averaging.enabled else None
        self._micro_index = 0
        self.stop_on_non_finite = stop_on_non_finite
        #: the run's config fingerprint, recorded in every checkpoint's tl_hf_state.json (set by the run template)
        self.config_fingerprint: dict[str, Any] | None = None
        if getattr(args, "hub_token", None):
            raise ValueError(hub_token_refused("TrainingArguments.hub_token"))
        # before the Trainer builds its Accelerator (and DeepSpeed engine): what tl_hf cannot do under DeepSpeed
        check_deepspeed(args, regularizers=self.regularizers, freezing=self.freezing, llrd=self.llrd,
                        averaging=self.averaging)
        #: defaults for :meth:`create_model_card` (``dataset``, ``dataset_name``, ``base_model``, ``results``, ...),
        #: used by every path that writes the card (``push_to_hub()``, ``push_to_hub=True``)
        self.card_info: dict[str, Any] = {}
        if not self.freezing.is_dynamic:
            # static policies are applied before the Trainer (and DDP) sees the model: frozen weights are excluded
            # from DDP's reducer, and backward stops at the lowest trainable depth.
            self.freezer.apply()
        super().__init__(model, args, *rest, **kwargs)
        self._check_fsdp()
        # transformers 5.x trap (facts note §1): BERT-style heads return a plain mean CE and ignore
        # num_items_in_batch, yet the Trainer then skips the division by gradient_accumulation_steps and multiplies by
        # the number of processes. Treat every model's loss as a per-micro-batch mean instead.
        self.model_accepts_loss_kwargs = False
        self._add_callbacks(model)
        self._log_setup(model)

    # -- setup ----------------------------------------------------------------------------------------------------
    def _add_callbacks(self, model) -> None:
        """The lr recorder, regularizer binding, gradual unfreezing and the feature cache, each when it applies."""
        self._lr_recorder = GroupLRRecorder()
        self.add_callback(self._lr_recorder)
        self.add_callback(LossCheck(self.check_loss, self.reset_loss_check))
        if self.regularizers:
            self.add_callback(RegularizerBinder(self))
        if self.averager is not None:
            self.add_callback(WeightAveragingCallback(self.averager))
        if self.freezing.is_dynamic:
            self._check_ddp_args_for_unfreezing()
            self.add_callback(GradualUnfreezingCallback(self.freezer))
        self._setup_feature_cache(model)  # after gradual unfreezing: its release follows each phase change

    def _log_setup(self, model) -> None:
        if self.layer_map.note and self.layer_map.source == "builtin":  # get_layer_map logged the others
            logger.info("layer map (%s): %s", self.layer_map.model_type, self.layer_map.note)
        pre_frozen = len(self.freezer.params) - len(self.freezer.base_trainable)
        if pre_frozen and self.freezing.policy != "full" and not hasattr(model, "peft_config"):
            logger.warning("%d parameters were already frozen (requires_grad=False) when TransferTrainer was built; "
                           "freezing policies never unfreeze them. Set requires_grad=True first if the %s policy "
                           "should manage them.", pre_frozen, self.freezing.policy)
        logger.info("TransferTrainer: %s model, %d blocks, policy %s, llrd decay %s, %d trainable parameters",
                    self.layer_map.model_type, self.layer_map.num_blocks, self.freezing.policy, self.llrd.decay,
                    self.freezer.num_trainable())

    # -- setup ----------------------------------------------------------------------------------------------------
    def _check_fsdp(self) -> None:
        """What tl_hf refuses under the FSDP this run got (or FSDP asked for but not running):
        :func:`tl_hf.core.fsdp.check_fsdp`."""

        check_fsdp(self.args, self.accelerator, freezing_policy=self.freezing.policy, model=self.model,
                   regularizers=self.regularizers, averaging=self.averager is not None)

    def _check_ddp_args_for_unfreezing(self) -> None:
        a = self.args
        if a.ddp_static_graph:
            raise ValueError("gradual unfreezing changes which parameters get gradients, which DDP's static_graph "
                             "forbids; set ddp_static_graph=False")
        if a.ddp_find_unused_parameters is False:
            raise ValueError("gradual unfreezing under DDP needs ddp_find_unused_parameters=True (frozen parameters "
                             "get no gradient); remove ddp_find_unused_parameters=False")
        if a.ddp_find_unused_parameters is None and getattr(a, "activation_checkpointing", False):
            a.ddp_find_unused_parameters = True  # the Trainer would default it to False under checkpointing

    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            from transformers.trainer_optimizer import is_optimizer_factory

            wd = self.args.weight_decay if self.llrd.weight_decay is None else self.llrd.weight_decay
            groups = param_groups_layer_decay(
                opt_model, lr=self.args.learning_rate, decay=self.llrd.decay, weight_decay=wd,
                head_lr=self.llrd.head_lr, min_lr_scale=self.llrd.min_lr_scale, layer_map=self.layer_map,
            )
            if self.optimizer_cls_and_kwargs is not None:
                cls, kw = self.optimizer_cls_and_kwargs
            else:
                cls, kw = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            kw = dict(kw)
            if is_optimizer_factory(cls) or {"params", "model", "optimizer_dict"} & set(kw):
                raise ValueError(f"optim={self.args.optim!r} builds its own parameter groups, which cannot carry "
                                 "layer-wise learning rates; use a standard torch optimizer (adamw_torch_fused, "
                                 "adamw_torch, sgd, adafactor, ...)")
            self.optimizer = cls(groups, **kw)
        return self.optimizer

    # -- regularizers in the step ----------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._note_loss(loss)  # on the device, no host sync; read at logging / save steps (CheckpointStateMixin)
        self._micro_index += 1
        if self.accelerator.sync_gradients:  # last micro-batch of the accumulation window: once per optimizer step
            self._micro_index = 0
            self._add_penalty_grads()
        return loss

    def _add_penalty_grads(self) -> None:
        """Every active regularizer adds its penalty's gradient (in the loss scaler's units) to the parameters'."""
        active = [r for r in self.regularizers if r.active]
        if not active:
            return
        scaler = getattr(self.accelerator, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        named = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        for r in active:
            r.add_penalty_grad(named, scale)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        extra = model.training and bool(self.regularizers)
        result = super().compute_loss(model, inputs, return_outputs=return_outputs or extra,
                                      num_items_in_batch=num_items_in_batch)
        if not extra:
            return result
        loss, outputs = result
        step = StepContext(self.state.global_step, self._micro_index, self.args.process_index, self.data_collator,
                           self._prepare_inputs, self.accelerator.unwrap_model, outputs)
        for r in self.regularizers:
            if r.active:
                extra = r.extra_loss(model, inputs, step)
                if extra is not None:
                    loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation and prediction in the dataset's order, also under ``train_sampling_strategy="group_by_length"``:
        transformers 5 groups evaluation batches by length too, which permutes ``predict``'s rows against the dataset
        (per-row outputs -- prediction files, QA answers, tagged tokens -- would then belong to other rows). Several
        processes: transformers' default, accelerate's ordered sharding."""
        from transformers.trainer_utils import has_length

        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def get_train_dataloader(self):  # the feature cache's index wrapping: FeatureCacheMixin
        mixers = [r for r in self.regularizers if r.active and hasattr(r, "wrap_train_dataset")]
        if not mixers:
            return super().get_train_dataloader()
        original = self.train_dataset
        ds = original
        try:
            import datasets

            if isinstance(ds, datasets.Dataset) and self.args.remove_unused_columns:
                ds = self._remove_unused_columns(ds, description="training")
        except ImportError:  # pragma: no cover - datasets is a dependency
            pass
        for r in mixers:
            ds = r.wrap_train_dataset(ds)
        self.train_dataset = ds
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset = original

    def end_task(self, dataset=None, **kwargs) -> None:
        """After training on a task: let every regularizer consolidate (EWC: Fisher + anchors on the unwrapped model
        in eval mode, sharded over processes and all-reduced; replay: fill the memory). ``dataset`` defaults to the
        training set; every process must call this."""
        data = self.train_dataset if dataset is None else dataset
        if data is None:
            raise ValueError("end_task needs a dataset (the trainer has no train_dataset)")
        try:
            import datasets

            if isinstance(data, datasets.Dataset) and self.args.remove_unused_columns:
                data = self._remove_unused_columns(data, description="end_task")
        except ImportError:  # pragma: no cover
            pass
        amp = torch.bfloat16 if self.args.bf16 else (torch.float16 if self.args.fp16 else None)
        kwargs.setdefault("autocast_dtype", amp)  # the Fisher sees the model as training does; sums stay fp32

        model = plain_replica(self.model)  # FSDP2: a full, unsharded copy (the DDP path then); else the model
        with progress_bars(not self.args.disable_tqdm):  # the Fisher pass shows a bar on the local main process
            for r in self.regularizers:
                r.end_task(model, data, collate_fn=self.data_collator, device=self.args.device, **kwargs)

    # -- model card -----------------------------------------------------------------------------------------------
    def create_model_card(self, **kwargs) -> None:
        """The Trainer's card plus the transfer-learning section and Hub-valid metadata
        (:func:`tl_hf.core.model_card.write_transfer_card`); ``kwargs`` override :attr:`card_info`. This is what
        ``push_to_hub()`` writes and uploads."""
        if not self.is_world_process_zero():
            return
        from tl_hf.core.model_card import write_transfer_card

        write_transfer_card(self, super().create_model_card, **{**self.card_info, **kwargs})

    def evaluate(self, *args, **kwargs):
        """As ``Trainer.evaluate``; on the averaged weights when ``averaging.eval_with_average``."""
        with self._averaged():
            return self._checked(super().evaluate(*args, **kwargs))

    def _averaged(self):
        on = self.averager is not None and self.averaging.eval_with_average
        return self.averager.swapped() if on else contextlib.nullcontext()

    def predict(self, *args, **kwargs):
        """As ``Trainer.predict`` (checked inside :meth:`outputs_checked`); on the averaged weights when
        ``averaging.eval_with_average``, as :meth:`evaluate` (the continual runner scores every task through it)."""
        with self._averaged():
            out = super().predict(*args, **kwargs)
        self._checked(out.metrics)
        return out

    # -- logging --------------------------------------------------------------------------------------------------
    @property
    def lr_history(self) -> list[dict[str, float]]:
        """The lr of every group at every optimizer step of the last ``train()``, warm-up included:
        ``[{"step": 1, "lr/embeddings": ..., "lr/head": ...}, ...]`` (``log_history`` holds only the logging steps)."""
        return self._lr_recorder.history

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "learning_rate" in logs and self.optimizer is not None:
            for name, lr in (self._lr_recorder.lrs or group_lrs(self.optimizer)).items():
                logs[f"lr/{name}"] = lr
            t = self._lr_recorder.trainable
            logs["trainable_params"] = self.freezer.num_trainable() if t is None else t
            for r in self.regularizers:
                if r.active:
                    v = r.penalty_value(self.model)
                    if v is not None:
                        logs[f"penalty/{r.name}"] = v
            logs.update(self._regularizer_losses())
        super().log(logs, start_time)

    def _regularizer_losses(self) -> dict[str, float]:
        """``{name}/loss`` of every active regularizer with a data term (LwF, replay, DER): its last micro-batch's
        value, averaged over ranks like the Trainer's ``loss`` (each rank saw other examples). Called on every rank
        (training-time logging is), so the collective is safe; the rank set is the same on all ranks. The one device
        sync of these values is here, at logging steps."""
        named = [(f"{r.name}/loss", r.last_loss_tensor) for r in self.regularizers
                 if r.active and r.last_loss_tensor is not None]
        if not named:
            return {}
        values = torch.stack([t.float().to(self.args.device) for _, t in named])
        values = self.accelerator.reduce(values, reduction="mean")
        return {k: float(v) for (k, _), v in zip(named, values.tolist())}


def depth_uses(llrd: LLRDConfig, freezing: FreezingConfig, reinit: ReinitConfig | None = None) -> list[str]:
    """What in this setup needs the depth of every parameter (a layer map): LLRD with decay < 1 or a head lr,
    non-``full`` freezing, feature caching, re-initialised top blocks. Empty: any model trains, at one depth."""
    uses = []
    if llrd.decay < 1:
        uses.append(f"llrd.decay={llrd.decay}")
    if llrd.head_lr is not None:
        uses.append("llrd.head_lr")
    if freezing.policy != "full":
        uses.append(f"freezing.policy={freezing.policy}")
    if freezing.cache_features:
        uses.append("freezing.cache_features")
    if reinit is not None and reinit.enabled:
        uses.append("reinit")
    return uses


def _build_regularizers(specs) -> list[Regularizer]:
    regs = [build_regularizer(dict(r) if isinstance(r, Mapping) else r) for r in specs or []]
    names = [r.name for r in regs]
    if len(set(names)) != len(names):
        raise ValueError(f"each regularizer may be given once, got {names}")
    return regs


def _coerce(value, cls, what):
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        from dataclasses import fields

        valid = {f.name for f in fields(cls)}
        unknown = set(value) - valid
        if unknown:
            bad = sorted(unknown)[0]
            raise ValueError(f"unknown {what} key {bad!r}" + did_you_mean(bad, valid)
                             + f" Valid keys: {', '.join(sorted(valid))}")
        return cls(**value)
    raise TypeError(f"{what} must be a {cls.__name__} or a dict, got {type(value).__name__}")
