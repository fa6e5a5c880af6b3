import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))

# The test models are tiny: one intra-op thread is as fast alone and tens of times faster when another process
# competes for the 2 cores (OpenMP threads spin-wait). Subprocess tests inherit OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


from pathlib import Path  # noqa: E402


def real_data_root(require: str) -> Path:
    """The shared data root ($TL_HF_DATA_ROOT, else ../shared/data next to the repo). Missing data is a test failure,
    not a skip: CI always provides it, and a silently skipped integration test proves nothing."""
    env = os.environ.get("TL_HF_DATA_ROOT")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / require).exists():
        import pytest

        pytest.fail(f"{require} not found under {root}: set TL_HF_DATA_ROOT to the shared data folder")
    return root


@pytest.fixture
def one_torch_thread():
    """Tiny models on 2 shared cores: one thread is many times faster than two fighting a busy neighbour."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
