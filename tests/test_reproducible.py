"""Same seed, config and thread count give a bit-identical original on CPU; the model cache tells
thread counts apart (1 and 2 threads sum in other orders and train other models)."""

import torch

from cnr_fast import experiments as E
from cnr_fast.config import RunConfig
from cnr_fast.data import load_dataset
from cnr_fast.resume import weights_digest

CFG = RunConfig().replace(data={"dataset": "digits", "image_size": 16}, train={"epochs": 2})


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_same_seed_config_threads_give_a_bit_identical_original():
    ds = load_dataset(CFG.data)
    a = _with_threads(1, lambda: E.train_reference("original", CFG, ds, "cpu", quiet=True)[0])
    b = _with_threads(1, lambda: E.train_reference("original", CFG, ds, "cpu", quiet=True)[0])
    assert weights_digest(a) == weights_digest(b)
    c = _with_threads(1, lambda: E.train_reference("original", CFG.replace(seed=1), ds, "cpu", quiet=True)[0])
    assert weights_digest(c) != weights_digest(a)  # the check can fail: another seed, another model


def test_model_cache_key_holds_the_thread_count():
    ds = load_dataset(CFG.data)
    one = _with_threads(1, lambda: E.reference_key("original", CFG, ds))
    two = _with_threads(2, lambda: E.reference_key("original", CFG, ds))
    assert one != two
    assert one == _with_threads(1, lambda: E.reference_key("original", CFG, ds))
