"""compare on a user's own setup (issue 28): the user's training function and the user's own checkpoints make the
models compare unlearns and judges against, digest for digest; a recipe that trains badly stops before any method."""

import pytest
import torch
import torch.nn as nn

import cnr_fast
from cnr_fast.config import RunConfig
from cnr_fast.errors import UserError
from cnr_fast.resume import weights_digest

pytestmark = pytest.mark.usefixtures("one_thread")

TAPS = {"L0": "0.0", "L1": "0", "L2": "1", "L3": "2", "L4": "3"}
CFG = RunConfig().replace(train={"epochs": 1}, baseline={"epochs": 1, "stabilize_epochs": 0})


def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # [-1, 1]
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)
    tr, va, te = idx[:1100], idx[1100:1400], idx[1400:]
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}


def build():
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(block(1, 8), block(8, 8), block(8, 16), block(16, 16), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 10))


CALLS = []


def my_train(model, data, classes, seed, epochs=30):
    """The user's own loop: Adam on data['train'] restricted to `classes`, full batches of 256."""
    x, y = data["train"]
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 256):
            b = perm[i:i + 256]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    CALLS.append((sorted(classes), seed, weights_digest(model)))
    return model.eval()


def test_compare_with_the_users_training_function():
    CALLS.clear()
    data = _data()
    r = cnr_fast.compare(build, data, forget=[3], methods=["lm", "rfs"], seeds=1, train=my_train, config=CFG, taps=TAPS)
    assert "my_train" in r["recipe"] and r["recipe_checks"][0]["ok"]
    # the user's model and data named as such, not as the config's defaults (cnr-fast's ResNet, mnist5k)
    assert r["arch"] == "your build() (build)" and r["width"] is None
    assert r["config"]["model"]["arch"] == r["arch"] and r["config"]["data"]["dataset"] == r["dataset"] == "user"
    kinds = [c[0] for c in CALLS]
    assert kinds[0] == list(range(10)) and all(k == [c for c in range(10) if c != 3] for k in kinds[1:])
    assert len(CALLS) == 4  # original, retrained, null, RFS: every model by the user's recipe
    # the original compare unlearned is the one the user's function returned, digest for digest
    assert r["per_seed_originals"][0]["weights_sha256"] == CALLS[0][2]
    assert r["per_seed"][0]["original"]["forget_acc"] > 0.8
    assert r["per_seed"][0]["retrained"]["forget_acc"] == 0.0
    # a train function needs the user's own validation split
    with pytest.raises(UserError, match="'val' split of your own"):
        cnr_fast.compare(build, {k: v for k, v in data.items() if k != "val"}, forget=[3], methods=["lm"], seeds=1,
                         train=my_train, config=CFG, taps=TAPS)


def test_compare_with_the_users_checkpoints():
    data = _data()
    CALLS.clear()
    orig = my_train(build(), data, list(range(10)), 7)
    refs = (my_train(build(), data, [c for c in range(10) if c != 3], 8),
            my_train(build(), data, [c for c in range(10) if c != 3], 9))
    r = cnr_fast.compare(build, data, forget=[3], methods=["lm"], seeds=1, originals=[orig], references=[refs],
                         config=CFG, taps=TAPS)
    assert r["per_seed_originals"][0]["weights_sha256"] == weights_digest(orig)
    assert "given models" in r["recipe"]
    # models keyed by a seed compare does not run, a seed left without one, or one of the two alone: refused
    for kw in ({"originals": {3: orig}, "references": {3: refs}}, {"originals": [orig], "references": [refs]},
               {"originals": [orig]}):
        with pytest.raises(UserError, match="seed|go together"):
            cnr_fast.compare(build, data, forget=[3], methods=["lm"], seeds=2 if "references" in kw and 3 not in
                             kw["originals"] else 1, config=CFG, taps=TAPS, **kw)
    with pytest.raises(UserError, match="out of range"):
        cnr_fast.compare(build, data, forget=[12], methods=["lm"], seeds=1, originals=[orig], references=[refs],
                         config=CFG, taps=TAPS)
    # the references are the user's too: their test accuracies are the audit's
    for name, model in (("retrained", refs[0]), ("retrained_null", refs[1])):
        xt, yt = data["test"]
        with torch.no_grad():
            pred = model(xt).argmax(1)
        keep = yt != 3
        assert r["per_seed"][0][name]["retain_acc"] == pytest.approx(float((pred[keep] == yt[keep]).float().mean()))
    # without a 'val' of the user's, validation would be carved from the images the given originals trained on
    with pytest.warns(UserWarning, match=r"originals given and data has no 'val'.*data\['val'\] in Python"):
        cnr_fast.compare(build, {k: v for k, v in data.items() if k != "val"}, forget=[3], methods=["lm"], seeds=1,
                         originals=[orig], references=[refs], config=CFG, taps=TAPS)


def test_a_recipe_that_trains_badly_stops_before_any_method():
    def lazy(model, data, classes, seed):  # returns the model untrained
        return model

    with pytest.raises(UserError, match="lazy.*near chance.*as your pipeline does"):
        cnr_fast.compare(build, _data(), forget=[3], methods=["lm"], seeds=1, train=lazy, config=CFG, taps=TAPS)
    with pytest.raises(UserError, match="far below the expect_acc"):
        cnr_fast.compare(build, _data(), forget=[3], methods=["lm"], seeds=1, train=lambda m, d, c, s: my_train(
            m, d, c, s, epochs=4), config=CFG, taps=TAPS, expect_acc=0.999)


SCRIPT = '''
import torch, torch.nn as nn

def build(num_classes=10):
    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o), nn.ReLU())
    return nn.Sequential(block(1, 8, 1), block(8, 16, 2), block(16, 16, 2), block(16, 16, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))

def train(model, data, classes, seed):
    x, y = data["train"]
    assert x.dtype == torch.float32 and -1 <= float(x.min()) and float(x.max()) <= 1 and "val" in data
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    open(__file__ + ".calls", "a").write(f"{len(classes)}\\n")
    return model
'''


def test_cli_compare_with_a_train_script_and_given_checkpoints(tmp_path, capsys):
    import importlib.util
    import json

    from cnr_fast.cli import main

    script = tmp_path / "mine.py"
    script.write_text(SCRIPT)
    base = ["compare", "--dataset", "digits", "--image-size", "16", "--model", f"{script}:build", "--methods", "lm",
            "--seeds", "1", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main(base + ["--train-script", f"{script}:train", "--train-epochs", "3", "--out", str(tmp_path / "x")]) == 2
    assert main(base + ["--train-script", f"{script}:train", "--out", str(tmp_path / "a")]) == 0
    r = json.loads((tmp_path / "a" / "compare.json").read_text())
    assert f"{script}:train" in r["recipe"] and "Recipe: " in (tmp_path / "a" / "report.md").read_text()
    assert (tmp_path / "mine.py.calls").read_text().split() == ["10", "9", "9"]  # original, retrained, null
    # the user's own models, given as checkpoints: compare uses those, digest for digest
    spec = importlib.util.spec_from_file_location("mine_for_test", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y = torch.rand(64, 1, 16, 16) * 2 - 1, torch.arange(64) % 10
    torch.manual_seed(3)
    mine = mod.train(mod.build(), {"train": (x, y), "val": (x, y)}, list(range(10)), 3)
    keep = [c for c in range(10) if c != 2]
    ref, null = (mod.train(mod.build(), {"train": (x, y), "val": (x, y)}, keep, s) for s in (4, 5))
    for d in ("orig", "refs", "wrong"):
        (tmp_path / d).mkdir()
    torch.save(mine.state_dict(), tmp_path / "orig" / "seed0.pt")
    torch.save(ref.state_dict(), tmp_path / "refs" / "retrained-seed0.pt")
    torch.save(null.state_dict(), tmp_path / "refs" / "null-seed0.pt")
    torch.save(mine.state_dict(), tmp_path / "wrong" / "seed_0.pt")
    given = ["--originals", str(tmp_path / "orig"), "--references", str(tmp_path / "refs")]
    # a misnamed checkpoint is refused, not silently replaced by a trained model; one folder alone is refused
    assert main(base + ["--originals", str(tmp_path / "wrong"), "--references", str(tmp_path / "refs"),
                        "--out", str(tmp_path / "w")]) == 2
    assert main(base + ["--originals", str(tmp_path / "orig"), "--out", str(tmp_path / "w")]) == 2
    # trained on noise: near chance, stopped before any method
    assert main(base + given + ["--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b" / "compare.json").exists()
    capsys.readouterr()
    assert main(base + given + ["--force", "--out", str(tmp_path / "b")]) == 0
    # digits has no validation split of its own: carved from the training images the given originals saw
    assert "with --originals, each method's setting will be chosen on a validation split carved" in capsys.readouterr().err
    r = json.loads((tmp_path / "b" / "compare.json").read_text())
    assert r["per_seed_originals"][0]["weights_sha256"] == weights_digest(mine)
    assert r["recipe"].startswith("your checkpoints (--originals") and not r["recipe_checks"][0]["ok"]
    # a "retrained" reference that still knows the forget class is refused
    from cnr_fast.data import load_dataset, to_float
    from cnr_fast.config import RunConfig as RC

    ds = load_dataset(RC().replace(data={"dataset": "digits", "image_size": 16}).data)
    real = (to_float(ds.train.x), ds.train.y)
    good = mod.train(mod.build(), {"train": real, "val": real}, list(range(10)), 3)
    torch.save(good.state_dict(), tmp_path / "orig" / "seed0.pt")
    torch.save(good.state_dict(), tmp_path / "refs" / "retrained-seed0.pt")
    assert main(base + given + ["--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c" / "compare.json").exists()


def test_taps_cnr_reads_are_checked_before_any_training():
    def shallow():  # three stages: taps L1-L3 are found, CNR's default L4 is not there
        def block(i, o, st):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=st, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        return nn.Sequential(block(1, 8, 1), block(8, 16, 2), block(16, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(16, 10))

    CALLS.clear()
    with pytest.raises(UserError, match="the model has only .*L3 .no L4.; pass taps="):
        cnr_fast.compare(shallow, _data(), forget=[3], methods=["cnr", "lm"], seeds=1, train=my_train, config=CFG)
    assert CALLS == []  # stopped before the user's function trained anything
