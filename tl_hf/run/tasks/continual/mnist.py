"""Split-MNIST tasks of a continual run (``kind: mnist``) and their replay source: MNIST digits that no task uses,
or an image folder converted to grey 28 x 28."""

from __future__ import annotations

from tl_hf._errors import ConfigError, one_line
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.continual.config import ContinualDataConfig, ImageSource
from tl_hf.run.tasks.continual.data import Prepared, check_budgets, fit_num_labels

__all__ = ["grey28", "load_image_source", "prepare_mnist"]


def prepare_mnist(cfg: RunConfig, seed: int, budgets: list[int]) -> Prepared:
    """``kind: mnist``: one task per digit group, the head the scenario needs, the replay source, checked budgets."""
    from tl_hf.continual import split_mnist_tasks
    from tl_hf.run.data.mnist import load_mnist_idx
    from tl_hf.run.data.paths import resolve_data_root

    d: ContinualDataConfig = cfg.data
    images, labels = load_mnist_idx(resolve_data_root(d.root))
    try:
        tasks = split_mnist_tasks(images, labels, pairs=[tuple(p) for p in d.pairs], train_fraction=d.train_fraction,
                                  seed=seed, max_per_task=d.max_per_task, scenario=d.scenario)
    except ValueError as exc:
        raise ConfigError(f"data: {one_line(exc)}") from None
    spec = d.image_source_spec()
    num_labels, names = _head(d, spec)
    source = source_info = None
    if spec is not None:
        source, source_info = load_image_source(spec, d, images, labels, seed, num_labels)
        if spec.imagefolder is not None:  # class_incremental: the folder's classes get a block after the tasks'
            names += [f"{spec.name}:{c}" for c in source_info["class_names"]]
            num_labels += len(source_info["class_names"])
    check_budgets(budgets, tasks[0].name, len(tasks[0].train), spec.name if spec else None,
                  len(source) if source is not None else None, text=False)
    num_labels, names = fit_num_labels(cfg, num_labels, names)
    info = [{"name": t.name, "train_samples": len(t.train), "eval_samples": len(t.eval), "labels": list(t.labels),
             "class_names": list(t.class_names), "digits": [int(x) for x in p]} for t, p in zip(tasks, d.pairs)]
    return Prepared(tasks=tasks, num_labels=num_labels, label_names=names, info=info, source=source,
                    source_info=source_info)


def _head(d: ContinualDataConfig, spec: ImageSource | None) -> tuple[int, list[str]]:
    """Head size and label names: the digits themselves (class_incremental), else the position in the group."""
    if d.scenario == "class_incremental":
        top = max(max(p) for p in d.pairs)
        if spec is not None and spec.digits is not None:
            top = max(top, *spec.digits)  # a digits source keeps its digits as labels
        return top + 1, [str(i) for i in range(top + 1)]
    num_labels = max(len(p) for p in d.pairs)
    return num_labels, [f"digit {i + 1} of the pair" for i in range(num_labels)]


def load_image_source(spec: ImageSource, d: ContinualDataConfig, images, labels, seed: int, offset: int):
    """``(TensorDictDataset, info)`` of a Split-MNIST replay source: grey ``[1, 28, 28]`` floats in [0, 1] (like the
    tasks' examples), a seeded sample of ``max_samples``. Labels: a digits source's digits (class_incremental) or
    positions in its digit list (domain_incremental); an image folder's classes ``offset + i`` (sorted names)."""
    import numpy as np
    import torch

    from tl_hf.continual import TensorDictDataset

    rng = np.random.default_rng(seed + 7919)  # its own stream: the tasks' splits do not depend on the source
    if spec.digits is not None:
        idx = np.flatnonzero(np.isin(labels, spec.digits))
        idx = idx[rng.permutation(len(idx))][:spec.max_samples]
        digits = labels[idx].astype(np.int64)
        if d.scenario == "class_incremental":
            y, ids, class_names = digits, list(spec.digits), [str(x) for x in spec.digits]
        else:
            y = np.array([spec.digits.index(int(x)) for x in digits], dtype=np.int64)
            ids, class_names = list(range(len(spec.digits))), [str(x) for x in spec.digits]
        x = images[idx]
        where = f"MNIST t10k digits {spec.digits} ({len(idx)} of {int(np.isin(labels, spec.digits).sum())} images)"
    else:
        from tl_hf.run.data.paths import DataError
        from tl_hf.run.data.imagefolder import resolve_dir, scan_folder

        try:
            folder = resolve_dir(spec.imagefolder, d.root, f"{spec.where}.imagefolder")
            class_names, paths, cls = scan_folder(folder, f"{spec.where}.imagefolder", [], [])
        except DataError as exc:
            raise ConfigError(one_line(exc)) from None
        order = rng.permutation(len(paths))[:spec.max_samples]
        order = np.sort(order)
        x = np.stack([grey28(paths[i], spec.where) for i in order]) if len(order) else np.zeros((0, 28, 28), np.uint8)
        y = np.array([offset + cls[i] for i in order], dtype=np.int64)
        ids = [offset + i for i in range(len(class_names))]
        where = f"{folder} ({len(order)} of {len(paths)} images, grey 28 x 28)"
    ds = TensorDictDataset(pixel_values=torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                           labels=torch.from_numpy(np.asarray(y, dtype=np.int64)))
    info = {"name": spec.name, "samples": len(ds), "source": where, "labels": ids, "class_names": class_names}
    return ds, info


def grey28(path: str, where: str):
    """One image file as MNIST-like ``uint8 [28, 28]``: flattened to RGB (palette, alpha, 16-bit handled as the image
    recipe does), converted to grey (ITU-R 601-2 luma), resized to 28 x 28 (bilinear, whole image, no crop)."""
    import numpy as np
    from PIL import Image

    from tl_hf.run.data.image_transform import to_rgb

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (56, 56))  # decode big JPEGs at reduced scale (DCT scaling)
            im.load()
            img = to_rgb(im).convert("L")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        raise ConfigError(f"{where}.imagefolder: cannot read image {path} ({type(exc).__name__}: "
                          f"{one_line(exc)[:120]}); remove it from the folder") from None
    if img.size != (28, 28):
        img = img.resize((28, 28), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
