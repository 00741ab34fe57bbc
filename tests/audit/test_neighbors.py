import numpy as np
import pytest
import torch

from cnr_fast.audit.neighbors import knn_indices, knn_predict, nn_purity


def test_knn_indices_match_sklearn(blobs):
    NearestNeighbors = pytest.importorskip("sklearn.neighbors").NearestNeighbors
    xtr, _, xte, _ = blobs
    ref = NearestNeighbors(n_neighbors=10).fit(xtr).kneighbors(xte, return_distance=False)
    ours = knn_indices(torch.from_numpy(xte), torch.from_numpy(xtr), 10, chunk=37).numpy()
    assert (ours == ref).mean() > 0.99


def test_knn_faiss_backend_agrees(blobs):
    pytest.importorskip("faiss")
    xtr, _, xte, _ = blobs
    a = knn_indices(xte, xtr, 5, backend="torch")
    b = knn_indices(xte, xtr, 5, backend="faiss")
    assert (a == b).float().mean() > 0.99


def test_exclude_self(blobs):
    xtr = torch.from_numpy(blobs[0])
    idx = knn_indices(xtr, xtr, 3, exclude_self=True)
    assert idx.shape == (len(xtr), 3) and not (idx == torch.arange(len(xtr)).unsqueeze(1)).any()


def test_knn_predict_matches_sklearn(blobs):
    KNeighborsClassifier = pytest.importorskip("sklearn.neighbors").KNeighborsClassifier
    xtr, ytr, xte, _ = blobs
    ref = KNeighborsClassifier(5).fit(xtr, ytr).predict(xte)
    assert (knn_predict(xtr, ytr, xte, 5).numpy() == ref).mean() > 0.99


def test_knn_tie_goes_to_smallest_label():
    base = torch.tensor([[0.0], [1.0], [-1.0], [2.0]])
    y = torch.tensor([3, 1, 3, 1])
    assert int(knn_predict(base, y, torch.tensor([[0.0]]), k=4)[0]) == 1


def test_nn_purity_numpy(blobs):
    xtr, ytr, xte, yte = blobs
    f = yte == 2
    d = ((xte[f][:, None, :] - xtr[None]) ** 2).sum(-1)
    nn = np.argsort(d, 1)[:, :10]
    expect = (ytr[nn] == 2).mean()
    assert nn_purity(xtr, ytr, xte[f], yte[f], k=10) == pytest.approx(expect, abs=1e-6)
    assert np.isnan(nn_purity(xtr, ytr, xte[:0], yte[:0]))


def test_knn_goes_through_the_op_dispatcher_and_doctor_shows_it(blobs, monkeypatch):
    """The automatic choice is the op dispatcher's (ops/knn.py registers both searches): small CPU
    searches get the torch backend, searches above FAISS_MIN_WORK get faiss where it imports, and
    `cnr-fast doctor` lists the op with its reasons."""
    from cnr_fast.cli.doctor import collect
    from cnr_fast.ops import backend
    from cnr_fast.ops import knn as K

    xtr, _, xte, _ = blobs
    q, b = torch.as_tensor(xte).float(), torch.as_tensor(xtr).float()
    monkeypatch.delenv("CNR_FAST_BACKEND", raising=False)
    chosen, reasons = backend.choose("knn_indices", q, b, 5)
    has_faiss = K._faiss() is not None
    assert chosen.name == "torch" and (not has_faiss or "torch measured faster" in reasons["faiss"][0])
    monkeypatch.setattr(K, "FAISS_MIN_WORK", 1.0)
    assert backend.choose("knn_indices", q, b, 5)[0].name == ("faiss" if has_faiss else "torch")
    assert (knn_indices(q, b, 5) == knn_indices(q, b, 5, backend="torch")).float().mean() > 0.99
    assert "knn_indices" in collect()["ops"]
