"""Layer-by-layer analysis of a CNN: how linearly separable the classes are at every layer.

After Campos, Jou & Giró-i-Nieto (Image and Vision Computing 2017, layer-by-layer analysis): the activations of
each layer are fed to a linear SVM and to a softmax (multinomial logistic regression) classifier
whose regularisation C is chosen by cross-validation; the resulting accuracies, one row per layer
and classifier, show where the sentiment information appears in the network.

Pure torch + scikit-learn: images and labels come in as tensors, a ``pandas.DataFrame`` comes out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@torch.no_grad()
def extract_layer_features(model: nn.Module, layers: Mapping[str, nn.Module], images: torch.Tensor,
                           batch_size: int = 32, spatial_pool: int | None = None) -> "OrderedDict[str, np.ndarray]":
    """The outputs of ``layers`` (name -> submodule of ``model``) for ``images``, flattened per image.

    The model runs in eval mode. ``spatial_pool=s`` first average-pools 4-d maps to s x s (full
    conv maps of early layers are large); None keeps them whole.
    """
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook(name):
        def store(_module, _inputs, output):
            out = output
            if spatial_pool is not None and out.ndim == 4:
                out = F.adaptive_avg_pool2d(out, spatial_pool)
            captured[name].append(out.flatten(1).float().cpu().clone())  # a copy: in-place layers follow
        return store

    handles = [module.register_forward_hook(hook(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return OrderedDict((name, torch.cat(chunks).numpy()) for name, chunks in captured.items())


def _classifiers(seed: int) -> dict[str, object]:
    return {
        "linear_svm": make_pipeline(StandardScaler(), LinearSVC(dual="auto", max_iter=5000, random_state=seed)),
        "softmax": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }


def layer_analysis(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                   layers: Mapping[str, nn.Module] | None = None, Cs: Sequence[float] = DEFAULT_CS,
                   folds: int = 5, spatial_pool: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per (layer, classifier): the cross-validated C and the accuracy of a linear classifier.

    ``layers`` defaults to ``model.analysis_layers()`` (e.g. :class:`~moodlake.models.campos.CamposAlexNet`).
    Accuracy is nested cross-validation: ``folds`` outer stratified folds, in each of which an inner
    ``folds``-fold grid search over ``Cs`` picks C on the training part; ``C`` in the table is the
    value the same grid search picks on all the data. Columns: layer, classifier, C, accuracy,
    accuracy_std, n_features.
    """
    if layers is None:
        layers = model.analysis_layers()
    y = np.asarray(labels)
    features = extract_layer_features(model, layers, images, spatial_pool=spatial_pool)
    rows = []
    for layer, x in features.items():
        for name, pipeline in _classifiers(seed).items():
            param = f"{pipeline.steps[-1][0]}__C"
            inner = StratifiedKFold(folds, shuffle=True, random_state=seed)
            outer = StratifiedKFold(folds, shuffle=True, random_state=seed + 1)
            search = GridSearchCV(pipeline, {param: list(Cs)}, cv=inner)
            scores = cross_val_score(search, x, y, cv=outer)
            chosen = search.fit(x, y).best_params_[param]
            rows.append({"layer": layer, "classifier": name, "C": chosen, "accuracy": scores.mean(),
                         "accuracy_std": scores.std(), "n_features": x.shape[1]})
    return pd.DataFrame(rows, columns=["layer", "classifier", "C", "accuracy", "accuracy_std", "n_features"])
