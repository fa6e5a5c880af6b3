"""Extractive-QA features: question + context pairs tokenized with ``truncation="only_second"`` (only the context is
cut), ``max_length`` and a ``doc_stride`` overlap, so a long context becomes several overflowing windows
(``return_overflowing_tokens``); ``return_offsets_mapping`` maps tokens back to characters of the context.

* Train features carry ``start_positions`` / ``end_positions``: the tokens of the first gold answer, or the CLS index
  when the answer is not inside the window (transformers' ``run_qa.py`` convention).
* Eval features carry the same labels (so the Trainer computes an eval loss and gathers them) and, kept aside from the
  model inputs, ``example_id`` and ``offset_mapping`` with ``None`` for every token outside the context, which the
  post-processing (:mod:`tl_hf.run.qa_postprocess`) uses to regroup windows by question and map spans to text.

Checks before anything is cut: a question that leaves no room for context in ``max_length`` tokens, a ``doc_stride``
that leaves no new context per window, and (``doc_stride: null``) a context that does not fit: one line each, naming
the question id and the key to change.
"""

from __future__ import annotations

from tl_hf.run.data.paths import DataError

__all__ = ["EVAL_KEEP", "prepare_features"]

#: columns of the eval features that are not model inputs (the post-processing reads them)
EVAL_KEEP = ("example_id", "offset_mapping")


def _check_room(batch, tokenizer, max_length: int, doc_stride: int | None, where: str) -> None:
    q_lens = [len(ids) for ids in tokenizer(batch["question"], add_special_tokens=False)["input_ids"]]
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for qid, n in zip(batch["id"], q_lens):
        room = max_length - n - specials
        if room < 1:
            raise DataError(f"{where}: question id {qid!r} is {n} tokens long, which leaves no room for its context in "
                            f"data.max_length={max_length} tokens; raise data.max_length or shorten the question")
        if doc_stride is not None and doc_stride >= room:
            raise DataError(f"{where}: question id {qid!r} leaves {room} context tokens per window, and "
                            f"data.doc_stride={doc_stride} >= that would add no new context per window; lower "
                            f"data.doc_stride (below {room}) or raise data.max_length={max_length}")


def _span_tokens(offsets, seq_ids, start_char: int, end_char: int, cls_index: int) -> tuple[int, int]:
    """The first and last token of the answer ``[start_char, end_char)`` in this window, or ``(cls, cls)``."""
    ctx = [i for i, s in enumerate(seq_ids) if s == 1]
    first, last = ctx[0], ctx[-1]
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def prepare_features(ds, tokenizer, *, max_length: int, doc_stride: int | None, train: bool, where: str):
    """The features of ``ds`` (``id``, ``question``, ``context``, ``answers``): one row per window."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("question_answering needs a fast tokenizer (offset mappings); this model's tokenizer is "
                        f"{type(tokenizer).__name__}: give a model folder with tokenizer.json")
    pad_right = tokenizer.padding_side == "right"

    def encode(batch):
        _check_room(batch, tokenizer, max_length, doc_stride, where)
        questions = [q.lstrip() for q in batch["question"]]  # leading blanks waste window tokens
        first, second = (questions, batch["context"]) if pad_right else (batch["context"], questions)
        enc = tokenizer(first, second, truncation="only_second" if pad_right else "only_first",
                        max_length=max_length, stride=doc_stride or 0, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
        sample_map = enc.pop("overflow_to_sample_mapping")
        if doc_stride is None and len(sample_map) != len(set(sample_map)):
            ex = next(i for i in sample_map if sample_map.count(i) > 1)
            raise DataError(f"{where}: the context of question id {batch['id'][ex]!r} does not fit in "
                            f"data.max_length={max_length} tokens with its question, and data.doc_stride is null; set "
                            "data.doc_stride (e.g. 128) to cut long contexts into overlapping windows")
        ctx_id = 1 if pad_right else 0
        starts, ends, example_ids, offsets_out = [], [], [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            ex = sample_map[i]
            seq_ids = [(1 if s == ctx_id else (None if s is None else 0)) for s in enc.sequence_ids(i)]
            ids = enc["input_ids"][i]
            cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            answers = batch["answers"][ex]
            s_char = answers["answer_start"][0]
            s_tok, e_tok = _span_tokens(offsets, seq_ids, s_char, s_char + len(answers["text"][0]), cls_index)
            starts.append(s_tok)
            ends.append(e_tok)
            if not train:
                example_ids.append(batch["id"][ex])
                offsets_out.append([o if seq_ids[k] == 1 else None for k, o in enumerate(offsets)])
        enc["start_positions"], enc["end_positions"] = starts, ends
        enc.pop("offset_mapping")
        if not train:
            enc["example_id"], enc["offset_mapping"] = example_ids, offsets_out
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names,
                  desc=f"tokenizing {'train' if train else 'eval'} questions")
