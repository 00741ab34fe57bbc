import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnr_fast.audit.attention import (
    attention_head_table,
    attention_maps,
    attention_rollout,
    discriminative_patches,
    head_attention_mass,
    head_groups,
    last_block_gradcam,
)
from cnr_fast.audit.gradcam import gradcam, gradcam_overlap
from cnr_fast.data import to_float
from cnr_fast.models import LogitMask, build_model

SIZE, PATCH, N = 16, 4, 5  # vit_tiny at 16 px: 4x4 = 16 patches, T = 17 tokens, 6 blocks, 3 heads of 32


def _vit(seed=0, num_classes=5):
    torch.manual_seed(seed)
    m = build_model("vit_tiny", num_classes, 1, SIZE, 1.0).eval()
    with torch.no_grad():  # torchvision zero-initialises the head: no gradient, no Grad-CAM
        m.heads.head.weight.normal_(0, 0.2)
    return m


def _x(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return to_float(torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8))


def _reference_maps(model, x):
    """float64 softmax(Q K^T / sqrt(d)) per block from each block's recorded input, ln_1 and in_proj."""
    inputs = {}
    hooks = [blk.register_forward_pre_hook(lambda _m, a, i=i: inputs.__setitem__(i, a[0].detach()))
             for i, blk in enumerate(model.encoder.layers)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for i, blk in enumerate(model.encoder.layers):
        ln, mha = blk.ln_1, blk.self_attention
        h = F.layer_norm(inputs[i].double(), ln.normalized_shape, ln.weight.detach().double(), ln.bias.detach().double(),
                         ln.eps)
        d, heads = mha.embed_dim, mha.num_heads
        w, b = mha.in_proj_weight.detach().double(), mha.in_proj_bias.detach().double()
        q = (h @ w[:d].T + b[:d]).unflatten(-1, (heads, d // heads)).transpose(1, 2)
        k = (h @ w[d:2 * d].T + b[d:2 * d]).unflatten(-1, (heads, d // heads)).transpose(1, 2)
        out[i] = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // heads), -1)
    return out


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(getattr(m, "_forward_hooks_with_kwargs", {})))
            for m in model.modules()]


def test_attention_maps_match_float64_and_leave_model_unchanged():
    m = _vit()
    x = _x()
    m.train()
    m.encoder.layers[2].eval()  # a submodule in another mode must stay so
    modes = [mod.training for mod in m.modules()]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    hooks = _hook_counts(m)
    m.eval()
    with torch.no_grad():
        before = m(x)
    m.train()
    m.encoder.layers[2].eval()

    maps = attention_maps(m, x, device="cpu", batch_size=2)  # batches of 2: 2 + 2 + 1

    assert [mod.training for mod in m.modules()] == modes
    assert _hook_counts(m) == hooks
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), before)
    ref = _reference_maps(m, x)
    assert sorted(maps) == list(range(6))
    for i in range(6):
        assert maps[i].shape == (N, 3, 17, 17) and maps[i].dtype == torch.float32
        np.testing.assert_allclose(maps[i].double().sum(-1).numpy(), 1.0, atol=1e-5)
        np.testing.assert_allclose(maps[i].double().numpy(), ref[i].numpy(), atol=2e-6, rtol=1e-4)
    # not a trivially uniform attention (the check above could otherwise pass vacuously)
    assert float((maps[5] - 1 / 17).abs().max()) > 1e-2


def test_attention_maps_through_logit_mask():
    m = _vit()
    x = _x(3)
    a = attention_maps(m, x, device="cpu")
    b = attention_maps(LogitMask(m, [1]), x, device="cpu")
    assert all(torch.equal(a[i], b[i]) for i in a)


def _numpy_rollout(maps):
    """Abnar & Zuidema 2020: R = Ã_L ... Ã_1, Ã = rownorm(0.5 mean_h A + 0.5 I); class token's row over patches."""
    blocks = [maps[i].double().numpy() for i in sorted(maps)]
    n, _, t, _ = blocks[0].shape
    out = np.zeros((n, t - 1))
    for e in range(n):
        r = np.eye(t)
        for a in blocks:
            a = 0.5 * a[e].mean(0) + 0.5 * np.eye(t)
            a = a / a.sum(1, keepdims=True)
            r = a @ r
        out[e] = r[0, 1:]
    return out


def test_rollout_matches_numpy_recurrence_and_topk():
    m = _vit()
    x = _x()
    ours = attention_rollout(m, x, device="cpu").numpy()
    ref = _numpy_rollout(attention_maps(m, x, device="cpu"))
    assert ours.shape == (N, 16)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # the order of the product matters: R = Ã_L ... Ã_1, not Ã_1 ... Ã_L
    maps = attention_maps(m, x, device="cpu")
    reversed_ref = _numpy_rollout({i: maps[5 - i] for i in range(6)})
    assert np.abs(reversed_ref - ref).max() > 1e-4
    mask = discriminative_patches(m, x, torch.zeros(N, dtype=torch.long), device="cpu", top_frac=0.25)
    assert mask.shape == (N, 16) and mask.dtype == torch.bool and (mask.sum(1) == 4).all()
    top = np.argsort(-ref, axis=1, kind="stable")[:, :4]
    want = np.zeros((N, 16), bool)
    np.put_along_axis(want, top, True, axis=1)
    np.testing.assert_array_equal(mask.numpy(), want)


def test_discriminative_patches_gradcam_method():
    m = _vit()
    x = _x()
    y = torch.tensor([0, 1, 2, 3, 4])
    # reference: Grad-CAM on the last block's ln_1 output, by hand
    seen = {}
    h = m.encoder.layers[-1].ln_1.register_forward_hook(lambda _m, _i, o: seen.__setitem__("a", o))
    try:
        logits = m(x)
    finally:
        h.remove()
    g = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), seen["a"])[0]
    a, g = seen["a"].detach().double()[:, 1:], g.double()[:, 1:]
    ref = torch.relu((g.mean(1, keepdim=True) * a).sum(-1))
    assert float(ref.min(1).values.max()) < float(ref.max(1).values.min())  # not constant: a real ranking
    scores = last_block_gradcam(m, x, y, device="cpu", batch_size=2)
    np.testing.assert_allclose(scores.numpy(), ref.numpy(), rtol=1e-6, atol=1e-9)
    mask = discriminative_patches(m, x, y, device="cpu", top_frac=0.5, method="gradcam")
    assert mask.shape == (N, 16) and (mask.sum(1) == 8).all()
    for e in range(N):  # every chosen patch scores at least as high as every other one
        assert float(ref[e][mask[e]].min()) >= float(ref[e][~mask[e]].max())
    # why not tap L4: only the class token of the last block reaches the head, its patch tokens get no gradient
    assert float(gradcam(m, x, "L4", y, resize=False).abs().max()) == 0.0


def _forced(patch_j, m=None):
    """A vit_tiny whose last block makes every query (the class token's included) attend to patch j:
    a large marker on one residual coordinate of patch j's token (its position embedding), and in the
    last block Q = a constant, K = that coordinate after ln_1, for every head."""
    m = m or _vit()
    d0 = 7
    blk = m.encoder.layers[-1]
    mha = blk.self_attention
    d, heads = mha.embed_dim, mha.num_heads
    dh = d // heads
    with torch.no_grad():
        m.encoder.pos_embedding[0, 1 + patch_j, d0] += 1000.0
        mha.in_proj_weight[: 2 * d].zero_()
        mha.in_proj_bias[: 2 * d].zero_()
        for h in range(heads):
            mha.in_proj_bias[h * dh] = 10.0  # query
            mha.in_proj_weight[d + h * dh, d0] = 10.0  # key
    return m


def test_head_attention_mass_forced_attention():
    j = 6
    m = _forced(j)
    x = _x()
    on = torch.zeros(N, 16, dtype=torch.bool)
    on[:, j] = True
    mass = head_attention_mass(m, x, on, device="cpu")
    assert mass.shape == (3,)
    np.testing.assert_allclose(mass.numpy(), 1.0, atol=1e-4)
    off = head_attention_mass(m, x, ~on, device="cpu")
    np.testing.assert_allclose(off.numpy(), 0.0, atol=1e-4)
    # a neighbouring patch (an off-by-one in the class-token offset would read it) gets nothing
    near = torch.zeros(N, 16, dtype=torch.bool)
    near[:, j - 1] = True
    assert float(head_attention_mass(m, x, near, device="cpu").max()) < 1e-4
    # per-example patch sets: half the examples point at j, the rest elsewhere -> mass = that share
    mixed = torch.zeros(N, 16, dtype=torch.bool)
    mixed[:2, j] = True
    mixed[2:, 0] = True
    np.testing.assert_allclose(head_attention_mass(m, x, mixed, device="cpu").numpy(), 2 / N, atol=1e-4)
    # every block: (L, heads); the forced one is the last, an unforced block is not ~1
    all_blocks = head_attention_mass(m, x, on, device="cpu", layer="all")
    assert all_blocks.shape == (6, 3)
    np.testing.assert_allclose(all_blocks[-1].numpy(), mass.numpy())
    assert float(all_blocks[0].max()) < 0.5


def test_head_groups():
    assert head_groups(12, 4) == {"Head 1-3": [0, 1, 2], "Head 4-6": [3, 4, 5], "Head 7-9": [6, 7, 8],
                                  "Head 10-12": [9, 10, 11]}
    assert head_groups(3, 4) == {"Head 1": [0], "Head 2": [1], "Head 3": [2]}
    assert list(head_groups(5, 2).values()) == [[0, 1, 2], [3, 4]]


def test_attention_head_table_structure():
    import json

    orig = _vit(0)
    models = {"original": orig, "other": _vit(1), "lm": LogitMask(orig, [2]), "forced": _forced(3, _vit(0))}
    x = _x()
    y = torch.full((N,), 2)
    t = attention_head_table(models, "original", x, y, device="cpu", groups=4)
    json.dumps(t)
    assert t["heads"] == 3 and t["layer"] == 5 and t["n_layers"] == 6 and t["n_examples"] == N
    assert t["patches"]["k"] == 4 and t["patches"]["n_patches"] == 16
    assert t["groups"] == {"Head 1": [0], "Head 2": [1], "Head 3": [2]}
    assert math.isclose(t["uniform"], 4 / 17)
    o = t["models"]["original"]
    assert set(o) == {"per_head", "groups", "global", "change"}
    assert o["change"]["per_head"] == [0.0] * 3 and o["change"]["global"] == 0.0
    assert all(v == 0.0 for v in o["change"]["groups"].values())
    assert t["models"]["lm"]["change"]["global"] == 0.0  # logit masking leaves the attention as it was
    assert math.isclose(o["global"], float(np.mean(o["per_head"])))
    patches = discriminative_patches(orig, x, y, device="cpu")
    ph = head_attention_mass(models["other"], x, patches, device="cpu").numpy()
    row = t["models"]["other"]
    np.testing.assert_allclose(row["per_head"], ph)
    np.testing.assert_allclose(row["change"]["per_head"], ph - np.array(o["per_head"]))
    assert math.isclose(row["change"]["global"], row["global"] - o["global"], abs_tol=1e-12)
    # groups=2 on 3 heads: Head 1-2, Head 3
    t2 = attention_head_table({"original": orig}, "original", x, y, device="cpu", groups=2, layer=0)
    assert list(t2["models"]["original"]["groups"]) == ["Head 1-2", "Head 3"] and t2["layer"] == 0
    g = t2["models"]["original"]
    assert math.isclose(g["groups"]["Head 1-2"], float(np.mean(g["per_head"][:2])))


def test_gradcam_overlap():
    orig, other = _vit(0), _vit(1)
    x = _x(4)
    y = torch.full((4,), 2)
    assert abs(gradcam_overlap(orig, orig, x, y, "L3", device="cpu") - 1.0) < 1e-6
    a = gradcam(orig, x, "L3", y, resize=False).reshape(4, -1).double().numpy()
    b = gradcam(other, x, "L3", y, resize=False).reshape(4, -1).double().numpy()
    assert (np.linalg.norm(a, axis=1) > 0).all() and (np.linalg.norm(b, axis=1) > 0).all()
    want = np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    got = gradcam_overlap(orig, other, x, y, "L3", device="cpu", batch_size=3)
    assert abs(got - want) < 1e-9
    assert got < 0.9
    # ViT at L4: the original's maps are all zero (no gradient reaches the last block's patch tokens) -> NaN
    assert math.isnan(gradcam_overlap(orig, other, x, y, "L4", device="cpu"))
    # LogitMask: audited through the wrapped model (hidden states untouched) -> the original's own maps
    assert abs(gradcam_overlap(orig, LogitMask(orig, [2]), x, y, "L3", device="cpu") - 1.0) < 1e-6


def test_timm_vit_attention_maps():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=PATCH, in_chans=1,
                          num_classes=5, depth=2).eval()
    x = _x(3)
    inputs = {}
    hooks = [blk.attn.register_forward_pre_hook(lambda _m, a, i=i: inputs.__setitem__(i, a[0].detach()))
             for i, blk in enumerate(m.blocks)]
    try:
        maps = attention_maps(m, x, device="cpu")
    finally:
        for h in hooks:
            h.remove()
    assert sorted(maps) == [0, 1]
    for i, blk in enumerate(m.blocks):
        at = blk.attn
        w, b = at.qkv.weight.detach().double(), at.qkv.bias.detach().double()
        qkv = (inputs[i].double() @ w.T + b).unflatten(-1, (3, at.num_heads, at.head_dim)).permute(2, 0, 3, 1, 4)
        ref = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(at.head_dim), -1)
        assert maps[i].shape == (3, at.num_heads, 17, 17)
        np.testing.assert_allclose(maps[i].double().numpy(), ref.numpy(), atol=2e-6, rtol=1e-4)
    assert attention_rollout(m, x, device="cpu").shape == (3, 16)
