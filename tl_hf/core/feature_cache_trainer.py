"""The feature-cache side of :class:`~tl_hf.core.trainer.TransferTrainer` (``freezing.cache_features``): a mixin that
wraps the training and evaluation sets so each batch carries its examples' indices, builds the cached backbone
outputs (:mod:`tl_hf.core.feature_cache`) before the first step, and replays them in the loss and prediction steps.

It sits between ``TransferTrainer`` and ``transformers.Trainer`` in the MRO: ``TransferTrainer``'s own ``compute_loss``
and ``get_train_dataloader`` call ``super()``, which lands here first."""

from __future__ import annotations

import contextlib

import torch

from tl_hf.core.callbacks import FeatureCacheBuilder
from tl_hf.core.feature_checks import INDEX_KEY, IndexCollator, IndexedDataset, check_deterministic_data, \
    check_trainer_setup
from tl_hf.core.lp_ft import check_cached_probe
from tl_hf.core.progress import progress_bars

__all__ = ["FeatureCacheMixin"]


class FeatureCacheMixin:
    """Needs the trainer's ``freezing``, ``freezer``, ``layer_map`` and ``regularizers``; call
    :meth:`_setup_feature_cache` once the ``Trainer`` is built."""

    feature_cache = None
    _feature_train_store = _feature_eval_store = None

    def _setup_feature_cache(self, model) -> None:
        self.feature_cache = None
        self._feature_train_store = self._feature_eval_store = None
        if not self.freezing.cache_features:
            return
        from tl_hf.core.feature_cache import FeatureCache

        if self.freezing.is_dynamic:  # LP-FT: the cache serves the head-only first phase, then is dropped
            check_cached_probe(self.freezer, self.layer_map)
        else:
            self._check_feature_cache()
        if self.train_dataset is not None:
            IndexedDataset(self.train_dataset)  # refuses an iterable training set now, not at train()
        self.feature_cache = FeatureCache(model)
        self.add_callback(FeatureCacheBuilder(self._build_train_features, self._release_feature_cache))

    def _check_feature_cache(self) -> None:
        check_trainer_setup(self.model, self.freezer.depths, self.layer_map.head_depth, regularizers=self.regularizers,
                            args=self.args, freeze_norm_stats=self.freezing.freeze_norm_stats)

    def _cache_live(self) -> bool:
        """Whether cached outputs serve this step (LP-FT: only in its head-only phase). A pure query."""
        if self.feature_cache is None:
            return False
        return not (self.freezing.is_dynamic and (self.freezer.phase or 0) > 0)

    def _release_feature_cache(self) -> None:
        """Once the cache no longer serves (LP-FT's backbone trains now), free the cached outputs. Called by
        :class:`~tl_hf.core.callbacks.FeatureCacheBuilder` after every phase change."""
        if self.feature_cache is not None and not self._cache_live() and self.feature_cache.stores:
            self.feature_cache.stores.clear()
            self._feature_train_store = self._feature_eval_store = None

    def _build_train_features(self) -> None:
        if not self._cache_live():  # resumed after LP-FT's linear-probe phase: nothing to cache
            return
        self._check_feature_cache()
        self._feature_train_store = self._feature_store("train", self.train_dataset)

    @contextlib.contextmanager
    def _indexed(self, dataset, what: str = "training"):
        """Within the block, ``dataset`` wrapped to carry example indices and a collator that keeps them; the
        trainer's own ``train_dataset`` / ``data_collator`` are restored afterwards."""
        wrapped = IndexedDataset(dataset, what)
        self._set_signature_columns_if_needed()
        if INDEX_KEY not in self._signature_columns:
            self._signature_columns.append(INDEX_KEY)  # so remove_unused_columns keeps it
        saved = self.train_dataset, self.data_collator
        self.data_collator = IndexCollator(self.data_collator)
        try:
            yield wrapped
        finally:
            self.train_dataset, self.data_collator = saved

    def _feature_store(self, key: str, dataset):
        """The cached backbone outputs for ``dataset``: kept in memory from first use (rebuilt when the backbone
        changed), read from ``freezing.feature_cache_dir`` when saved there, else computed: each process its own
        shard, gathered so that every process holds all of them (:mod:`tl_hf.core.feature_shard`)."""
        from torch.utils.data import DataLoader, Subset

        from tl_hf.core.feature_shard import process_grid, shard_rows

        store = self.feature_cache.get(key, dataset)
        if store is not None:
            return store
        what = "training" if key == "train" else "evaluation"
        with self._indexed(dataset, what) as ds:
            collate = self._get_collator_with_removed_columns(self.data_collator, description=f"{what} feature cache")
        check_deterministic_data(ds, collate, what)
        rank, world = process_grid()
        rows = shard_rows(len(ds), rank, world)
        saved = self._saved_features(key, dataset, ds, collate, rows) if self.freezing.feature_cache_dir else None
        if isinstance(saved, tuple):  # not saved yet: (its key, the model fingerprint) to save it under
            saved, disk = None, saved
        if saved is not None:
            return self.feature_cache.adopt(key, saved)
        loader = DataLoader(ds if world == 1 else Subset(ds, rows), batch_size=self.args.eval_batch_size,
                            shuffle=False, collate_fn=collate, num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        with progress_bars(not self.args.disable_tqdm):
            store = self.feature_cache.build(key, dataset, loader, prepare=self._prepare_inputs,
                                             context=self.compute_loss_context_manager, what=what,
                                             collate_one=lambda i: collate([ds[i]]), gather=world > 1)
        if self.freezing.feature_cache_dir and rank == 0:
            from tl_hf.core.feature_disk import save_store

            save_store(self.freezing.feature_cache_dir, disk[0], store, disk[1])
        return store

    def _saved_features(self, key: str, dataset, ds, collate, rows: list[int]):
        """The store saved in ``freezing.feature_cache_dir`` for this model and data (every process found and read
        it), else ``(key, model fingerprint)`` to save the new one under."""
        from tl_hf.core.feature_disk import data_digests, load_store, model_digest, store_key
        from tl_hf.core.feature_shard import all_gather_bytes

        model_fp = model_digest(self.model)
        disk_key = store_key(model_fp, all_gather_bytes(data_digests(ds, collate, rows)), len(ds))
        store = load_store(self.freezing.feature_cache_dir, disk_key, dataset, self.feature_cache.fingerprint())
        if all(b == b"1" for b in all_gather_bytes(b"1" if store is not None else b"0")):
            return store
        return disk_key, model_fp

    # -- Trainer overrides ----------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.feature_cache is None or INDEX_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        inputs = dict(inputs)  # a training batch: replay the cached backbone
        idx = inputs.pop(INDEX_KEY)
        if not self._cache_live():  # LP-FT after its probe phase: the full forward
            return self.compute_loss(model, inputs, return_outputs, num_items_in_batch)
        store = self._feature_train_store or self._feature_store("train", self.train_dataset)
        with self.feature_cache.replay(store, idx, inputs):
            return self.compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def get_train_dataloader(self):
        if self.feature_cache is None:
            return super().get_train_dataloader()
        with self._indexed(self.train_dataset) as ds:
            self.train_dataset = ds
            return super().get_train_dataloader()

    def _get_train_sampler(self, train_dataset=None):
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
        if self.feature_cache is None or INDEX_KEY not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = dict(inputs)
        idx = inputs.pop(INDEX_KEY)
        if not self._cache_live():
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        with self.feature_cache.replay(self._feature_eval_store, idx, inputs):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
