import torch

from cnr_fast import ops
from cnr_fast.audit.features import Reducer, extract, pooled_side, tap_to_map
from cnr_fast.data import Split
from cnr_fast.models import Taps, build_model


def _split(n=37, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                 torch.randint(0, classes, (n,), generator=g))


def test_extract_shapes_and_cap(tiny_resnet):
    m = tiny_resnet()
    m.train()
    sp = _split()
    f = extract(m, sp, device="cpu", reducer=Reducer("pool", 256), batch_size=16, num_classes=10,
                class_sums=True, keep_full=True)
    assert m.training  # mode restored
    # width 0.0625 -> 4, 8, 16, 32 channels (min 4)
    assert f.full["L0"].shape == (37, 4 * 28 * 28) and f.full["L4"].shape == (37, 32 * 4 * 4)
    for v in f.vec.values():
        assert v.shape[0] == 37 and v.shape[1] <= 512
    assert f.vec["L0"].shape[1] == 4 * pooled_side(4, 28, 256) ** 2
    assert f.logits.shape == (37, 10) and torch.equal(f.y, sp.y)
    s, c = ops.class_sums(f.full["L2"], sp.y, 10)
    torch.testing.assert_close(f.sums["L2"], s, rtol=1e-5, atol=1e-4)
    assert torch.equal(f.counts, c)


def test_none_reduction_is_flattened_tap(tiny_resnet):
    m = tiny_resnet()
    sp = _split(8)
    f = extract(m, sp, device="cpu", taps=["L3"], reducer=Reducer("none"))
    from cnr_fast.data import to_float

    with torch.no_grad(), Taps(m, ["L3"], detach=True) as rec:
        m(to_float(sp.x))
    torch.testing.assert_close(f.vec["L3"], rec["L3"].reshape(8, -1))


def test_projection_is_fixed(tiny_resnet):
    t = torch.randn(5, 8, 10, 10)
    a, b = Reducer("project", 64, seed=3), Reducer("project", 64, seed=3)
    assert a(t, "L1").shape == (5, 64)
    torch.testing.assert_close(a(t, "L1"), b(t, "L1"))


def test_vit_tokens_become_grid_plus_cls(tiny_resnet):
    tok = torch.randn(2, 1 + 49, 12)
    grid, cls = tap_to_map(tok)
    assert grid.shape == (2, 12, 7, 7) and torch.equal(cls, tok[:, 0])
    assert torch.equal(grid[:, :, 0, 1], tok[:, 2])
    v = Reducer("pool", 100)(tok)
    assert v.shape == (2, 12 * 2 * 2 + 12)
    vit = build_model("vit_tiny", 10, 1, 28, 1.0).eval()
    f = extract(vit, _split(4), device="cpu", taps=["L0", "L4"], reducer=Reducer("pool", 512))
    assert f.vec["L4"].shape == (4, 96 * 2 * 2 + 96) and f.vec["L0"].shape == (4, 96 * 2 * 2)


def test_reducer_maps_give_back_the_pooled_grid():
    """The conv probe's input: the spatial map at the head of `vec` (ViT class token dropped), None for a
    projection, which mixes coordinates."""
    import torch.nn.functional as F

    from cnr_fast.audit.features import Reducer, tap_to_map

    cnn = torch.randn(3, 8, 14, 14)
    r = Reducer("pool", max_dim=128)
    v = r(cnn, "L1")
    assert torch.equal(r.maps(v, "L1"), F.adaptive_avg_pool2d(cnn, (4, 4)))
    vit = torch.randn(3, 1 + 16, 6)
    v = r(vit, "L2")
    grid, cls = tap_to_map(vit)
    assert torch.equal(r.maps(v, "L2"), grid) and torch.equal(v[:, -6:], cls)
    p = Reducer("project", max_dim=64)
    assert p.maps(p(cnn, "L1"), "L1") is None
