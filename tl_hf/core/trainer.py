"""TransferTrainer: ``transformers.Trainer`` with layer-wise LR decay, freezing policies and gradual unfreezing."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict
from typing import Any, Mapping

import torch
from transformers import Trainer

from tl_hf._errors import did_you_mean, hub_token_refused
from tl_hf.core.averaging import AveragingConfig, WeightAverager, WeightAveragingCallback
from tl_hf.core.callbacks import FeatureCacheBuilder, GradualUnfreezingCallback, GroupLRRecorder, RegularizerBinder
from tl_hf.core.feature_cache import INDEX_KEY as _INDEX_KEY
from tl_hf.core.feature_layer import prepare_feature_layer
from tl_hf.core.freezing import FreezingConfig, FreezingController
from tl_hf.core.layers import LayerMap, get_layer_map
from tl_hf.core.lp_ft import check_cached_probe
from tl_hf.core.optim import LLRDConfig, group_lrs, param_groups_layer_decay
from tl_hf.core.progress import progress_bars
from tl_hf.core.reinit import ReinitConfig, reinit_top_blocks
from tl_hf.core.state import STATE_FILE, atomic_write_json, read_json, refuse_untrusted_pickles, validate_checkpoint
from tl_hf.regularizers import Regularizer, StepContext, build_regularizer

logger = logging.getLogger(__name__)

__all__ = ["TransferTrainer", "NonFiniteLossError", "NonFiniteModelError"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stops before anything is saved over a good checkpoint."""


class NonFiniteModelError(RuntimeError):
    """A weight or the last eval loss is NaN or infinite at a save: nothing is saved (a good model stays)."""


class TransferTrainer(Trainer):
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
        if self.regularizers:
            self.add_callback(RegularizerBinder(self))
        if self.averager is not None:
            self.add_callback(WeightAveragingCallback(self.averager))
        if self.freezing.is_dynamic:
            self._check_ddp_args_for_unfreezing()
            self.add_callback(GradualUnfreezingCallback(self.freezer))
        self.feature_cache = None
        self._feature_train_store = self._feature_eval_store = None
        if self.freezing.cache_features:
            from tl_hf.core.feature_cache import FeatureCache, IndexedDataset

            if self.freezing.is_dynamic:  # LP-FT: the cache serves the head-only first phase, then is dropped
                check_cached_probe(self.freezer, self.layer_map)
            else:
                self._check_feature_cache()
            if self.train_dataset is not None:
                IndexedDataset(self.train_dataset)  # refuses an iterable training set now, not at train()
            self.feature_cache = FeatureCache(model)
            self.add_callback(FeatureCacheBuilder(self._build_train_features))

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
        """FSDP1 flattens each wrapped module's parameters into one FlatParameter, whose requires_grad is all or
        nothing: freezing part of it (or unfreezing later) fails inside torch unless the original parameters are
        kept (use_orig_params=True). Detect that here and say so."""
        if not getattr(self, "is_fsdp_enabled", False) or self.freezing.policy == "full":
            return
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        version = getattr(plugin, "fsdp_version", 1)
        if version == 1 and not getattr(plugin, "use_orig_params", False):
            raise ValueError(
                f"freezing policy {self.freezing.policy!r} under FSDP (version 1) needs use_orig_params=True: FSDP "
                "flattens each wrapped module's parameters into one tensor whose requires_grad cannot be partly "
                "False. Set fsdp_config: {use_orig_params: true} (or fsdp_version: 2), or use DDP.")

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
        if self.stop_on_non_finite and not torch.isfinite(loss):
            model.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {self.state.global_step + 1} (epoch "
                f"{self.state.epoch or 0:.2f}); nothing was saved after it. Likely causes: a learning rate too high "
                f"for this model (now {self.args.learning_rate:g}), fp16 overflow (try bf16 or a smaller lr), or "
                "labels outside the model's num_labels. Resume from the last checkpoint after fixing it.")
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
        if self.feature_cache is not None and _INDEX_KEY in inputs:  # a training batch: replay the cached backbone
            inputs = dict(inputs)
            idx = inputs.pop(_INDEX_KEY)
            if not self._cache_live():  # LP-FT after its probe phase: the full forward
                return self.compute_loss(model, inputs, return_outputs, num_items_in_batch)
            store = self._feature_train_store or self._feature_store("train", self.train_dataset)
            with self.feature_cache.replay(store, idx, inputs):
                return self.compute_loss(model, inputs, return_outputs, num_items_in_batch)
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

    def get_train_dataloader(self):
        if self.feature_cache is not None:
            with self._indexed(self.train_dataset) as ds:
                self.train_dataset = ds
                return super().get_train_dataloader()
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

    # -- cached backbone outputs (freezing.cache_features) --------------------------------------------------------
    def _check_feature_cache(self) -> None:
        from tl_hf.core.feature_cache import check_trainer_setup

        check_trainer_setup(self.model, self.freezer.depths, self.layer_map.head_depth, regularizers=self.regularizers,
                            args=self.args, freeze_norm_stats=self.freezing.freeze_norm_stats)

    def _cache_live(self) -> bool:
        """Whether cached outputs serve this step (LP-FT: only in its head-only phase; then they are dropped)."""
        if self.feature_cache is not None and self.freezing.is_dynamic and (self.freezer.phase or 0) > 0:
            if self.feature_cache.stores:
                self.feature_cache.stores.clear()  # the backbone trains now: free the cached outputs
                self._feature_train_store = self._feature_eval_store = None
            return False
        return self.feature_cache is not None

    def _build_train_features(self) -> None:
        if not self._cache_live():  # resumed after LP-FT's linear-probe phase: nothing to cache
            return
        self._check_feature_cache()
        self._feature_train_store = self._feature_store("train", self.train_dataset)

    @contextlib.contextmanager
    def _indexed(self, dataset, what: str = "training"):
        """Within the block, ``dataset`` wrapped to carry example indices and a collator that keeps them; the
        trainer's own ``train_dataset`` / ``data_collator`` are restored afterwards."""
        from tl_hf.core.feature_cache import IndexCollator, IndexedDataset

        wrapped = IndexedDataset(dataset, what)
        self._set_signature_columns_if_needed()
        if _INDEX_KEY not in self._signature_columns:
            self._signature_columns.append(_INDEX_KEY)  # so remove_unused_columns keeps it
        saved = self.train_dataset, self.data_collator
        self.data_collator = IndexCollator(self.data_collator)
        try:
            yield wrapped
        finally:
            self.train_dataset, self.data_collator = saved

    def _feature_store(self, key: str, dataset):
        """The cached backbone outputs for ``dataset``: built on first use, rebuilt when the backbone changed."""
        from torch.utils.data import DataLoader

        from tl_hf.core.feature_cache import check_deterministic_data

        store = self.feature_cache.get(key, dataset)
        if store is not None:
            return store
        what = "training" if key == "train" else "evaluation"
        with self._indexed(dataset, what) as ds:
            collate = self._get_collator_with_removed_columns(self.data_collator, description=f"{what} feature cache")
        check_deterministic_data(ds, collate, what)
        loader = DataLoader(ds, batch_size=self.args.eval_batch_size, shuffle=False, collate_fn=collate,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        with progress_bars(not self.args.disable_tqdm):
            return self.feature_cache.build(key, dataset, loader, prepare=self._prepare_inputs,
                                            context=self.compute_loss_context_manager, what=what,
                                            collate_one=lambda i: collate([ds[i]]))

    def _get_train_sampler(self, train_dataset=None):
        from tl_hf.core.feature_cache import IndexedDataset

        if isinstance(train_dataset, IndexedDataset):  # the same order as without the cache
            train_dataset = train_dataset.base
        return super()._get_train_sampler(train_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        if not self._cache_live():
            return super().get_eval_dataloader(eval_dataset)
        ds = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else \
            (self.eval_dataset if eval_dataset is None else eval_dataset)
        if ds is None or isinstance(ds, (dict, torch.utils.data.IterableDataset)) or not hasattr(ds, "__getitem__"):
            self._feature_eval_store = None
            return super().get_eval_dataloader(eval_dataset)
        self._feature_eval_store = self._feature_store(f"eval:{id(ds)}", ds)
        with self._indexed(ds, "evaluation") as wrapped:
            if not isinstance(eval_dataset, str):
                return super().get_eval_dataloader(wrapped)
            saved = self.eval_dataset  # keep the name: the Trainer keys persistent-worker loaders by it
            self.eval_dataset = {**saved, eval_dataset: wrapped}
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.eval_dataset = saved

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if self.feature_cache is None or _INDEX_KEY not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = dict(inputs)
        idx = inputs.pop(_INDEX_KEY)
        if not self._cache_live():
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        with self.feature_cache.replay(self._feature_eval_store, idx, inputs):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

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
        with progress_bars(not self.args.disable_tqdm):  # the Fisher pass shows a bar on the local main process
            for r in self.regularizers:
                r.end_task(self.model, data, collate_fn=self.data_collator, device=self.args.device, **kwargs)

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

    _outputs_of: str | None = None  # what outputs_checked guards (None: as Trainer's evaluate / predict)

    @contextlib.contextmanager
    def outputs_checked(self, what: str):
        """Within the block, :meth:`check_finite` checks every ``evaluate`` / ``predict`` result (its loss) before it
        is returned, so a caller writes no predictions or plots for a diverged model (the run template uses it)."""
        self._outputs_of = what
        try:
            yield
        finally:
            self._outputs_of = None

    def _checked(self, metrics):
        if self._outputs_of is not None:
            losses = [v for k, v in (metrics or {}).items() if k.endswith("_loss") and isinstance(v, (int, float))]
            self.check_finite(self._outputs_of, eval_loss=losses[0] if losses else None)
        return metrics

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
                    if getattr(r, "last_loss", None) is not None:
                        logs[f"{r.name}/loss"] = r.last_loss
        super().log(logs, start_time)

    # -- checkpoint state -----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state saved in every checkpoint (subclasses extend it)."""
        state = {"format": 1, "freezing": self.freezer.state_dict(), "llrd": asdict(self.llrd),
                 "layer_map": {"model_type": self.layer_map.model_type, "num_blocks": self.layer_map.num_blocks},
                 "regularizers": [r.name for r in self.regularizers]}
        if self.config_fingerprint is not None:  # what a resume must match (tl_hf.run.validate.check_resume)
            state["config"] = self.config_fingerprint
        return state

    def load_extra_state(self, state: dict[str, Any], checkpoint: str) -> None:
        lm = state.get("layer_map", {})
        if lm and (lm.get("num_blocks") != self.layer_map.num_blocks):
            raise ValueError(f"{checkpoint}: written for a {lm.get('model_type')} model with {lm.get('num_blocks')} "
                             f"blocks, this model has {self.layer_map.num_blocks}")
        if "freezing" in state:
            self.freezer.load_state_dict(state["freezing"])
        saved = state.get("regularizers", [])
        if sorted(saved) != sorted(r.name for r in self.regularizers):
            raise ValueError(f"{checkpoint} was written with regularizers {saved}, this run has "
                             f"{[r.name for r in self.regularizers]}")
        for r in self.regularizers:
            r.load(checkpoint, prefix=f"tl_hf_reg_{r.name}")

    def check_finite(self, what: str, eval_loss: float | None = None) -> None:
        """Before ``what`` is saved: every weight and the eval loss (``eval_loss``, else the last logged one) must be
        finite, else :class:`NonFiniteModelError` (with ``stop_on_non_finite``): a broken model never replaces a good
        one."""
        if not self.stop_on_non_finite:
            return
        bad = [n for n, p in self.model.named_parameters() if p.numel() and not bool(torch.isfinite(p.detach()).all())]
        evals = [h["eval_loss"] for h in self.state.log_history if "eval_loss" in h]
        if eval_loss is not None:
            evals.append(eval_loss)
        problem = ""
        if bad:
            problem = f"{len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]})"
        elif evals and not torch.isfinite(torch.tensor(float(evals[-1]))):
            problem = f"the last eval loss is {evals[-1]}"
        if problem:
            raise NonFiniteModelError(
                f"not saving {what} at step {self.state.global_step}: {problem}; the model diverged (a learning rate "
                f"too high for it, now {self.args.learning_rate:g}, or fp16 overflow). Nothing was saved over the "
                "earlier outputs")

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        self.check_finite(f"the model to {output_dir or self.args.output_dir}")
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial) -> None:
        self.check_finite("a checkpoint")  # before any of its files is written
        if self.args.should_save:
            # written FIRST: transformers writes trainer_state.json near the end of its own save, and a checkpoint
            # without it is not resumable; so a crash at any point leaves either a checkpoint with all of tl_hf's
            # state, or one that transformers itself refuses, never a complete-looking one without our state
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            for r in self.regularizers:
                r.save(folder, prefix=f"tl_hf_reg_{r.name}")
            if self.averager is not None:
                self.averager.save(folder)
            atomic_write_json(os.path.join(folder, STATE_FILE), self.extra_state())
        super()._save_checkpoint(model, trial)

    def _load_rng_state(self, checkpoint) -> None:
        with refuse_untrusted_pickles(checkpoint):
            super()._load_rng_state(checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        with refuse_untrusted_pickles(checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        validate_checkpoint(resume_from_checkpoint)  # before anything is loaded: name a truncated file
        with refuse_untrusted_pickles(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if os.path.exists(path):
            self.load_extra_state(read_json(path), resume_from_checkpoint)
        else:
            if self.regularizers:
                from tl_hf.core.state import CorruptStateError

                raise CorruptStateError(
                    f"{resume_from_checkpoint} has no {STATE_FILE}, so the state of the regularizers "
                    f"({', '.join(r.name for r in self.regularizers)}) is missing: it was not written by tl_hf or is "
                    "incomplete; resume from another checkpoint")
            logger.warning("%s has no %s (not written by tl_hf?): the unfreezing phase is derived from the step",
                           resume_from_checkpoint, STATE_FILE)
            self.freezer.phase = None
        if self.averager is not None:
            self.averager.load(resume_from_checkpoint)


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
