"""t-SNE (scikit-learn) of tap features, the forget class highlighted in the figures.

A seeded, class-stratified subsample (default 300 test examples) is reduced to 50 dimensions with
PCA and embedded with perplexity 30, PCA initialisation and 300 iterations: the same settings and the
same examples for every model and tap.
"""

from __future__ import annotations

import numpy as np
import torch

N_POINTS = 300


def tsne_subsample(y, n: int = N_POINTS, seed: int = 0) -> np.ndarray:
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = max(1, n // max(len(classes), 1))
    idx = [rng.permutation(np.flatnonzero(y == c))[:per] for c in classes]
    return np.sort(np.concatenate(idx))


def tsne(x, *, seed: int = 0, max_iter: int = 300) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float32)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
    kw = {"max_iter": max_iter}
    try:
        emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, **kw)
    except TypeError:  # scikit-learn < 1.5 calls it n_iter
        emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, n_iter=max_iter)
    return emb.fit_transform(x)
