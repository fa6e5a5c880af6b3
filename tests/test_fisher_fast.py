"""The hook-based per-example Fisher (one batched forward + backward) against torch.func and batch-1 passes."""

import logging

import pytest
import torch
import torch.nn.functional as F
import transformers as T
from torch import nn

from tl_hf.regularizers.fisher import estimate_fisher
from tl_hf.regularizers.fisher.common import logits_of as _logits, sample_labels as _sample_labels

T.logging.set_verbosity_error()
LOGGER = "tl_hf.regularizers.fisher"


def _bert(dtype=torch.float64):
    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=32, num_labels=3, pad_token_id=0,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return T.BertForSequenceClassification(cfg).to(dtype)


def _text_batches(lengths=((10, 7, 3, 10, 5), (4, 9, 9, 1)), seq=10, token_types=True):
    """Padded batches (pad id 0) with many repeated ids within an example."""
    g = torch.Generator().manual_seed(0)
    out = []
    for lens in lengths:
        ids = torch.randint(1, 6, (len(lens), seq), generator=g)
        mask = torch.ones_like(ids)
        for i, n in enumerate(lens):
            ids[i, n:], mask[i, n:] = 0, 0
        b = {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (len(lens),), generator=g)}
        if token_types:
            b["token_type_ids"] = (torch.arange(seq) >= 4).long().expand(len(lens), seq) * mask
        out.append(b)
    return out


def _brute_force(model, batches, estimator, seed=0):
    """Batch-1 forward + backward per example (and per class for exact), squared and averaged."""
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    gen = torch.Generator().manual_seed(seed)
    n_ex = 0
    for batch in batches:
        u = torch.rand(batch["labels"].shape[0], generator=gen)
        for i in range(batch["labels"].shape[0]):
            one = {k: v[i:i + 1] for k, v in batch.items() if k != "labels"}
            logp = _logits(model(**one)).to(torch.float64).log_softmax(-1)[0]
            if estimator == "exact":
                terms = [(logp[c].exp().detach(), logp[c]) for c in range(logp.shape[0])]
            else:
                y = batch["labels"][i] if estimator == "empirical" else _sample_labels(logp[None], u[i:i + 1])[0]
                terms = [(1.0, logp[y])]
            for k, (w, lp) in enumerate(terms):
                grads = torch.autograd.grad(lp, list(params.values()), retain_graph=k < len(terms) - 1,
                                            allow_unused=True)
                for n, g in zip(params, grads):
                    if g is not None:
                        total[n] += w * g.double() ** 2
            n_ex += 1
    return {n: (t / n_ex).float() for n, t in total.items()}


def _assert_same(got, ref, rtol=1e-5):
    assert set(got) == set(ref)
    for k in ref:
        scale = ref[k].abs().max().item()
        torch.testing.assert_close(got[k], ref[k], rtol=rtol, atol=rtol * scale + 1e-20, msg=k)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_hooks_with_kwargs for m in model.modules())


@pytest.mark.parametrize("estimator", ["empirical", "sampled", "exact"])
def test_hooks_equal_vmap_and_batch_of_one_passes_on_padded_bert(estimator):
    model = _bert()
    data = _text_batches()
    hooks, n = estimate_fisher(model, data, estimator=estimator, per_example_impl="hooks", seed=4)
    vmap, _ = estimate_fisher(model, data, estimator=estimator, per_example_impl="vmap", seed=4)
    assert n == 9 and set(hooks) == {k for k, _ in model.named_parameters()}
    _assert_same(hooks, vmap)
    _assert_same(hooks, _brute_force(model, data, estimator, seed=4))
    assert _no_hooks(model)
    emb = model.bert.embeddings
    assert hooks["bert.embeddings.word_embeddings.weight"][0].abs().max() == 0  # padding_idx has no gradient
    assert hooks["bert.embeddings.word_embeddings.weight"][1:6].abs().min() > 0
    assert hooks["bert.embeddings.position_embeddings.weight"][10:].abs().max() == 0  # positions never used
    assert hooks["bert.embeddings.token_type_embeddings.weight"].abs().min() > 0
    assert emb.position_embeddings.weight.requires_grad


def test_hooks_in_float32_and_default_auto_use_hooks(caplog):
    model = _bert(torch.float32)
    data = _text_batches(token_types=False)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        auto, _ = estimate_fisher(model, data)
    assert not [r for r in caplog.records if "hooks do not apply" in r.message]
    vmap, _ = estimate_fisher(model, data, per_example_impl="vmap")
    for k in vmap:  # float32 rounding only: measured ~1e-7 relative
        assert ((auto[k] - vmap[k]).norm() / vmap[k].norm().clamp_min(1e-30)).item() < 1e-5, k


def test_parameter_subset():
    model = _bert()
    data = _text_batches()
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight",
             "bert.encoder.layer.1.intermediate.dense.bias", "classifier.weight"]
    sub, _ = estimate_fisher(model, data, param_names=names, per_example_impl="hooks")
    full, _ = estimate_fisher(model, data, per_example_impl="vmap")
    assert list(sub) == names
    _assert_same(sub, {k: full[k] for k in names})
    assert all(p.requires_grad for p in model.parameters())


def test_batches_of_one_and_num_samples():
    model = _bert()
    data = _text_batches(lengths=((3,), (10, 7, 3), (5, 6)))
    hooks, n = estimate_fisher(model, data, num_samples=3, per_example_impl="hooks")
    vmap, _ = estimate_fisher(model, data, num_samples=3, per_example_impl="vmap")
    assert n == 3
    _assert_same(hooks, vmap)


def test_bf16_autocast_hooks_match_vmap():
    model = _bert(torch.float32)
    data = _text_batches()
    hooks, _ = estimate_fisher(model, data, autocast_dtype=torch.bfloat16, per_example_impl="hooks")
    vmap, _ = estimate_fisher(model, data, autocast_dtype=torch.bfloat16, per_example_impl="vmap")
    assert all(v.dtype == torch.float32 for v in hooks.values())
    for k in vmap:
        if vmap[k].norm() > 0:
            assert ((hooks[k] - vmap[k]).norm() / vmap[k].norm()).item() < 0.05, k


class Mixed(nn.Module):
    """Embeddings with a padding_idx and 1-D (per-example) ids, LayerNorms over 1 and 2 dims (one without bias),
    Linear layers on 3-D and 2-D inputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8, padding_idx=3)
        self.kind = nn.Embedding(4, 8)
        self.ln = nn.LayerNorm(8)
        self.lin = nn.Linear(8, 8)
        self.ln2 = nn.LayerNorm((2, 4), bias=False)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, kind, attention_mask):
        b, t = input_ids.shape
        h = self.ln(self.emb(input_ids) + self.kind(kind)[:, None])
        h = self.ln2(torch.tanh(self.lin(h)).view(b, t, 2, 4)).view(b, t, 8)
        m = attention_mask[..., None].to(h.dtype)
        return {"logits": self.head((h * m).sum(1) / m.sum(1))}


def _mixed_batches(t=6):
    g = torch.Generator().manual_seed(1)
    out = []
    for b in (4, 3):
        ids = torch.randint(0, 6, (b, t), generator=g)  # ids repeat, and include the padding id 3
        mask = torch.ones_like(ids)
        mask[0, t // 2:] = 0
        out.append({"input_ids": ids, "kind": torch.randint(0, 4, (b,), generator=g), "attention_mask": mask,
                    "labels": torch.randint(0, 3, (b,), generator=g)})
    return out


@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_hooks_on_custom_layers(estimator):
    model = Mixed().double()
    data = _mixed_batches()
    hooks, _ = estimate_fisher(model, data, estimator=estimator, per_example_impl="hooks")
    _assert_same(hooks, _brute_force(model, data, estimator))
    assert hooks["emb.weight"][3].abs().max() == 0 and hooks["emb.weight"][:3].abs().min() > 0
    assert set(hooks) == {k for k, _ in model.named_parameters()}


# -- fallbacks: the result must stay exact --------------------------------------------------------------------------

class Tied(nn.Module):
    def __init__(self, mode):
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.emb = nn.Embedding(12, 6)
        self.lin = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.out = nn.Linear(6, 12, bias=False)
        if mode == "tied":
            self.out.weight = self.emb.weight

    def forward(self, input_ids, labels=None):
        h = self.emb(input_ids)
        if self.mode == "functional":  # the embedding matrix also used outside its module
            h = h + F.linear(h, self.emb.weight)[..., :6]
        elif self.mode == "twice":  # one module applied twice
            h = self.lin(h)
        elif self.mode == "inplace":
            h = h.clone()
        h = self.lin(h)
        if self.mode == "inplace":
            h.mul_(2)  # the module's output modified in place
        if self.mode == "tied":
            h = h + self.out(h)[..., :6]
        return {"logits": self.head(torch.tanh(h).mean(1))}


def _token_batches(seq=5):
    g = torch.Generator().manual_seed(2)
    return [{"input_ids": torch.randint(0, 12, (b, seq), generator=g), "labels": torch.randint(0, 3, (b,), generator=g)}
            for b in (3, 4)]


@pytest.mark.parametrize("mode,reason", [("tied", "registered in 2 modules"), ("functional", "used 2 time"),
                                         ("twice", "runs 2 times"), ("inplace", "modified in place")])
def test_unsupported_uses_fall_back_to_vmap_exactly(mode, reason, caplog):
    model = Tied(mode).double()
    data = _token_batches()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, _ = estimate_fisher(model, data)
    assert any(reason in r.message for r in caplog.records), [r.message for r in caplog.records]
    _assert_same(got, _brute_force(model, data, "empirical"))
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="per_example_impl='hooks' does not apply"):
        estimate_fisher(model, data, per_example_impl="hooks")
    assert _no_hooks(model)


def test_vit_takes_the_hook_path(caplog):
    """The patch-embedding Conv2d (unfold) and the embeddings' cls_token / position_embeddings (a per-example vjp of
    that module) are on the hook path since issue 14: no torch.func fallback."""
    torch.manual_seed(0)
    model = T.ViTForImageClassification(T.ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=8, num_labels=3))
    g = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(3, 3, 8, 8, generator=g), "labels": torch.tensor([0, 1, 2])}]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, _ = estimate_fisher(model, data)
    assert not any("torch.func" in r.message for r in caplog.records)
    ref = _brute_force(model, data, "empirical")
    for k in ref:
        assert ((got[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-30)).item() < 1e-4, k
    assert _no_hooks(model)
    # the hook path still applies to a subset of parameters that belong to supported modules
    names = ["vit.layers.0.mlp.fc2.weight", "vit.layers.0.layernorm_after.bias", "classifier.bias"]
    sub, _ = estimate_fisher(model, data, param_names=names, per_example_impl="hooks")
    for k in names:
        assert ((sub[k] - ref[k]).norm() / ref[k].norm()).item() < 1e-4, k


class SeqFirst(nn.Module):
    """Works in [T, B, D] layout: with T == B the shapes alone cannot tell where the batch is."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids):
        h = torch.tanh(self.lin(self.emb(input_ids.t())))  # [T, B, D]
        return {"logits": self.head(h.mean(0))}


class SummedPositions(nn.Module):
    """Reduces the [1, T, D] position embeddings over dim 0: broadcasting them to the batch would change the output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.pos = nn.Embedding(8, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids):
        pos = self.pos(torch.arange(input_ids.shape[1])[None]).sum(0)
        return {"logits": self.head(torch.tanh(self.emb(input_ids) + pos).mean(1))}


@pytest.mark.parametrize("cls,reason", [(SeqFirst, "not batch-first"), (SummedPositions, "change the model's output")])
def test_the_probe_catches_what_shapes_hide(cls, reason, caplog):
    model = cls().double()
    g = torch.Generator().manual_seed(3)
    data = [{"input_ids": torch.randint(0, 10, (4, 4), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
            for _ in range(2)]  # T == B == 4
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, _ = estimate_fisher(model, data)
    assert any(reason in r.message for r in caplog.records), [r.message for r in caplog.records]
    _assert_same(got, _brute_force(model, data, "empirical"))
    assert _no_hooks(model)


def test_hooks_are_removed_when_estimation_fails():
    model = _bert()
    data = _text_batches()
    data.append({"input_ids": data[0]["input_ids"]})  # no labels: raises mid-way
    with pytest.raises(ValueError, match="needs a 'labels' column"):
        estimate_fisher(model, data)
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="unknown per_example_impl"):
        estimate_fisher(model, data, per_example_impl="fast")
