"""freezing.cache_features: cached backbone outputs give the same training as the uncached feature-extraction run."""

import pytest
import torch
from transformers import TrainerCallback

from tiny import TokenDataset, params_snapshot, tiny_bert, tiny_model, training_args
from tl_hf import FeatureCacheError, FreezingConfig, TransferTrainer
from tl_hf.core.feature_cache import check_trainer_setup

FE = {"policy": "feature_extraction"}
FE_CACHED = {"policy": "feature_extraction", "cache_features": True}


class VarLenDataset(torch.utils.data.Dataset):
    """Token sequences of 3..8 tokens (padded per batch by ``pad_collate``); labels per ``kind``."""

    def __init__(self, n=24, seed=0, kind="single", num_labels=2):
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(3, 9, (n,), generator=g)
        self.ids = [torch.randint(1, 99, (int(k),), generator=g) for k in self.lengths]
        if kind == "single":
            self.labels = [int(x[0]) % num_labels for x in self.ids]
        elif kind == "regression":
            self.labels = [float(x[0]) / 99 for x in self.ids]
        else:  # multi-label
            self.labels = [[float(int(x[j]) % 2) for j in range(num_labels)] for x in self.ids]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def pad_collate(features, left=False, width=None):
    t = width or max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), t, dtype=torch.long)
    mask = torch.zeros(len(features), t, dtype=torch.long)
    for k, f in enumerate(features):
        n = len(f["input_ids"])
        span = slice(t - n, t) if left else slice(0, n)
        ids[k, span] = f["input_ids"]
        mask[k, span] = 1
    labels = torch.tensor([f["labels"] for f in features])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, n=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.px = torch.randn(n, 3, 16, 16, generator=g)
        self.y = (self.px[:, 0, 0, 0] > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.px[i], "labels": self.y[i]}


class _BlockCounter(TrainerCallback):
    """Counts forward calls of the model's first block that happen inside training steps."""

    def __init__(self, block):
        self.calls, self.in_step = 0, False
        block.register_forward_hook(self._hook)

    def _hook(self, *a):
        self.calls += self.in_step

    def on_step_begin(self, *a, **k):
        self.in_step = True

    def on_step_end(self, *a, **k):
        self.in_step = False


def _block(model):
    """A module inside the first block (hooks of a cached module itself still fire: it returns the cached output)."""
    return model.bert.encoder.layer[0].attention if hasattr(model, "bert") else model.vit.layers[0].attention


def _train(tmp_path, model, ds, freezing, collate=None, eval_ds=None, callbacks=(), **kw):
    args = dict(max_steps=6, per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.01, warmup_steps=1)
    args.update(kw)
    tr = TransferTrainer(model, training_args(tmp_path / str(freezing.get("cache_features", False)), **args),
                         train_dataset=ds, eval_dataset=eval_ds, data_collator=collate, freezing=freezing,
                         callbacks=list(callbacks))
    tr.train()
    return tr


CASES = {
    "bert": (lambda: tiny_bert(seed=0), lambda: TokenDataset(n=24), None, {}),
    "bert_varlen_ga": (lambda: tiny_bert(seed=0), lambda: VarLenDataset(), pad_collate,
                       {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}),
    # left padding to a fixed length: BERT's absolute positions make outputs depend on it, the same in every batch
    "bert_leftpad_fixed": (lambda: _last_token_pooler(tiny_bert(seed=0)), lambda: VarLenDataset(),
                           lambda f: pad_collate(f, left=True, width=8), {}),
    "bert_regression": (lambda: tiny_bert(num_labels=1, seed=0), lambda: VarLenDataset(kind="regression"),
                        pad_collate, {}),
    "bert_multilabel": (lambda: _multilabel_bert(), lambda: VarLenDataset(kind="multi", num_labels=3), pad_collate,
                        {}),
    "vit": (lambda: tiny_model("vit", num_labels=2, seed=0), lambda: ImageDataset(), None, {}),
}


def _last_token_pooler(model):
    """A pooler that reads the last position: a real token under left padding."""
    pooler = model.bert.pooler
    pooler.forward = lambda hidden: pooler.activation(pooler.dense(hidden[:, -1]))
    return model


def _multilabel_bert():
    m = tiny_bert(num_labels=3, seed=0)
    m.config.problem_type = "multi_label_classification"
    return m


@pytest.mark.parametrize("case", list(CASES))
def test_cached_training_equals_uncached(tmp_path, case):
    make_model, make_ds, collate, kw = CASES[case]
    ref, cached = make_model(), make_model()
    before = params_snapshot(cached)
    counter = _BlockCounter(_block(cached))
    tr_ref = _train(tmp_path / "ref", ref, make_ds(), FE, collate, **kw)
    tr = _train(tmp_path / "cached", cached, make_ds(), FE_CACHED, collate, callbacks=[counter], **kw)
    assert counter.calls == 0  # no training step ran the backbone
    assert tr._feature_train_store.nbytes > 0
    head = {n for n, p in cached.named_parameters() if p.requires_grad}
    assert head and all(n.startswith(("classifier", "bert.pooler", "vit.layernorm")) for n in head)
    for (n, p), (_, q) in zip(ref.named_parameters(), cached.named_parameters()):
        if n in head:
            assert not torch.equal(q, before[n]), n  # the head trained
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=n)
        else:
            assert torch.equal(q, before[n]), n  # the backbone is bitwise unchanged
    losses = lambda t: [h["loss"] for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert losses(tr) == pytest.approx(losses(tr_ref), rel=1e-5)


def _bert_dropout(backbone, head):
    """Tiny BERT with the same weights for any dropout (dropout modules are built from the config)."""
    model = tiny_bert(seed=0)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = backbone
    model.config.classifier_dropout = head
    fresh = type(model)(model.config)
    fresh.load_state_dict(model.state_dict())
    return fresh


def test_cached_run_equals_uncached_run_without_backbone_dropout(tmp_path):
    """The cache holds eval-mode backbone outputs; the head's own dropout (on BERT's pooled output) stays active."""
    runs = {"cached": (0.1, 0.3, FE_CACHED), "nodrop": (0.0, 0.3, FE), "drop": (0.1, 0.3, FE),
            "nohead": (0.0, 0.0, FE)}
    w = {}
    for name, (backbone, head, fz) in runs.items():
        model = _bert_dropout(backbone, head)
        _train(tmp_path / name, model, TokenDataset(n=24), fz)
        w[name] = model.classifier.weight
    torch.testing.assert_close(w["cached"], w["nodrop"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w["cached"], w["drop"], atol=1e-4)  # backbone dropout changes the uncached run
    assert not torch.allclose(w["cached"], w["nohead"], atol=1e-4)  # the head dropout was applied


def test_evaluate_predict_and_save_after_cached_training(tmp_path):
    model = tiny_bert(seed=0)
    counter = _BlockCounter(_block(model))
    tr = _train(tmp_path, model, VarLenDataset(), FE_CACHED, pad_collate, eval_ds=VarLenDataset(n=10, seed=1),
                eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=4)
    evals = [h for h in tr.state.log_history if "eval_loss" in h]
    assert len(evals) == 2 and len(tr.feature_cache.stores) == 2  # train + eval, the eval one built once
    cached_metrics = tr.evaluate()
    plain = TransferTrainer(model, training_args(tmp_path / "plain", per_device_eval_batch_size=4),
                            data_collator=pad_collate, freezing=FE)
    plain_metrics = plain.evaluate(VarLenDataset(n=10, seed=1))
    assert cached_metrics["eval_loss"] == pytest.approx(plain_metrics["eval_loss"], rel=1e-5)
    assert evals[-1]["eval_loss"] == pytest.approx(plain_metrics["eval_loss"], rel=1e-5)
    counter.in_step, counter.calls = True, 0
    tr.evaluate()  # the cached eval set: no backbone pass
    assert counter.calls == 0
    test = VarLenDataset(n=6, seed=2)
    pred = tr.predict(test)  # an unseen dataset runs the full model
    assert counter.calls > 0
    batch = pad_collate([test[i] for i in range(6)])
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(torch.as_tensor(pred.predictions), logits, rtol=1e-5, atol=1e-6)
    model.save_pretrained(tmp_path / "saved")
    reloaded = type(model).from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        again = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(again, logits)


def _resume_run(out, resume=None):
    model = tiny_bert(seed=0, dropout=True)  # head dropout is active: the resumed run must restore the RNG too
    args = training_args(out, max_steps=8, save_strategy="steps", save_steps=3, per_device_train_batch_size=4,
                         learning_rate=1e-2, warmup_steps=2)
    tr = TransferTrainer(model, args, train_dataset=VarLenDataset(n=20), data_collator=pad_collate, freezing=FE_CACHED)
    tr.train(resume_from_checkpoint=resume)
    return tr, model


def test_resume_of_a_cached_run_matches_uninterrupted(tmp_path):
    _, ref = _resume_run(tmp_path / "run")
    res_tr, res = _resume_run(tmp_path / "run", resume=str(tmp_path / "run" / "checkpoint-3"))
    assert res_tr.state.global_step == 8 and res_tr._feature_train_store is not None  # recomputed, not saved
    for (n, p), (_, q) in zip(ref.named_parameters(), res.named_parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-7, msg=n)


# -- refusals --------------------------------------------------------------------------------------------------------

def _one_line(exc):
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_cache_features_needs_the_feature_extraction_policy():
    with pytest.raises(ValueError) as exc:
        FreezingConfig(policy="top_k", k=1, cache_features=True)
    assert "freezing.cache_features needs policy 'feature_extraction'" in _one_line(exc)
    assert "set policy: feature_extraction or cache_features: false" in str(exc.value)
    with pytest.raises(ValueError, match="must be true or false"):
        FreezingConfig(policy="feature_extraction", cache_features="yes")


def test_cache_features_is_a_yaml_and_override_key():
    from tl_hf._errors import ConfigError
    from tl_hf.run.config import load_config

    cfg = load_config(None, ["freezing.policy=feature_extraction", "freezing.cache_features=true"])
    assert cfg.freezing.cache_features is True
    with pytest.raises(ConfigError, match="cache_features needs policy 'feature_extraction'"):
        load_config(None, ["freezing.cache_features=true"])


def test_regularizers_are_refused(tmp_path):
    with pytest.raises(FeatureCacheError) as exc:
        TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(), freezing=FE_CACHED,
                        regularizers=[{"name": "l2sp"}])
    assert "cannot be combined with regularizers (l2sp)" in _one_line(exc)


def test_iterable_training_set_is_refused(tmp_path):
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(TokenDataset())

    with pytest.raises(FeatureCacheError) as exc:
        TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=Stream(), freezing=FE_CACHED)
    assert "needs a map-style training dataset" in _one_line(exc)


def test_trainable_backbone_parameter_is_refused_before_training(tmp_path):
    model = tiny_bert()
    tr = TransferTrainer(model, training_args(tmp_path), train_dataset=TokenDataset(), freezing=FE_CACHED)
    model.bert.encoder.layer[0].attention.self.query.weight.requires_grad_(True)
    with pytest.raises(FeatureCacheError) as exc:
        tr.train()
    assert "needs the backbone entirely frozen, but 'bert.encoder.layer.0.attention.self.query.weight'" \
        in _one_line(exc)
    assert tr.state.global_step == 0


class _Noisy(TokenDataset):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["input_ids"] = torch.randint(1, 99, item["input_ids"].shape)
        return item


def _random_collate(features):
    batch = torch.utils.data.default_collate(features)
    batch["input_ids"] = batch["input_ids"][torch.randperm(len(features))]
    return batch


def _noisy_encoder(model):
    model.bert.encoder.register_forward_hook(
        lambda mod, args, out: out.__class__(last_hidden_state=out.last_hidden_state + torch.randn_like(
            out.last_hidden_state)))
    return model


def _mean_pooler(model):
    """A head that averages all positions, padding included: the cache (zeros there) cannot reproduce it."""
    pooler = model.bert.pooler
    pooler.forward = lambda hidden: pooler.activation(pooler.dense(hidden.mean(1)))
    return model


@pytest.mark.parametrize("make_model,ds,collate,match", [
    (tiny_bert, _Noisy(), None, "the training dataset returned different values for the same example twice"),
    (tiny_bert, TokenDataset(), _random_collate, "the data collator returned different batches"),
    (lambda: _noisy_encoder(tiny_bert()), TokenDataset(), None,
     "frozen module 'bert.encoder' gives different outputs for the same batch in eval mode"),
    (lambda: _mean_pooler(tiny_bert()), VarLenDataset(), pad_collate,
     ("BertForSequenceClassification gives different outputs when its frozen modules (bert.embeddings, "
      "bert.encoder) return their cached outputs")),
    # left padding: BERT's pooler reads position 0, which is padding for the shorter examples
    (tiny_bert, VarLenDataset(), lambda f: pad_collate(f, left=True), "e.g. padded positions"),
    # a pooler that reads a real token, but left padding shifts BERT's absolute positions with the batch length
    (lambda: _last_token_pooler(tiny_bert()), VarLenDataset(), lambda f: pad_collate(f, left=True),
     "for an example change with the padding of its batch"),
])
def test_what_the_cache_cannot_reproduce_is_refused_before_the_first_step(tmp_path, make_model, ds, collate, match):
    tr = TransferTrainer(make_model(), training_args(tmp_path, per_device_eval_batch_size=8), train_dataset=ds,
                         data_collator=collate, freezing=FE_CACHED)
    with pytest.raises(FeatureCacheError) as exc:
        tr.train()
    assert match in _one_line(exc) and exc.value.args[0].endswith("or set freezing.cache_features: false")
    assert tr.state.global_step == 0


def test_backbone_changed_during_training_is_an_error(tmp_path):
    model = tiny_bert()

    class Poke(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                with torch.no_grad():
                    model.bert.encoder.layer[1].output.dense.weight.mul_(2)

    with pytest.raises(FeatureCacheError) as exc:
        _train(tmp_path, model, TokenDataset(), FE_CACHED, callbacks=[Poke()])
    assert "the frozen backbone changed after its outputs were cached" in _one_line(exc)


def test_frozen_batchnorm_in_train_mode_is_refused():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    for p in list(model[0].parameters()) + list(model[1].parameters()):
        p.requires_grad_(False)
    depths = {n: (2 if n.startswith("2.") else 0) for n, _ in model.named_parameters()}
    check_trainer_setup(model, depths, 2, freeze_norm_stats=True)  # kept in eval mode: fine
    with pytest.raises(FeatureCacheError, match=r"frozen BatchNorm '1' normalizes with batch statistics.*"
                                                r"set freezing.freeze_norm_stats: true"):
        check_trainer_setup(model, depths, 2, freeze_norm_stats=False)
