"""scikit-learn estimators: the parent probe (softmax over each word's candidates) and the relation probe."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data


def _segments(groups: Any, n: int) -> np.ndarray:
    """Start offsets of the runs of equal consecutive ``groups`` values (rows of a group are contiguous)."""
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one value per row ({n}), got shape {g.shape}")
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(g[1:] != g[:-1]) + 1
    starts = np.concatenate([[0], change, [n]]).astype(np.int64)
    if len(np.unique(g)) != len(starts) - 1:
        raise ValueError("the rows of each group must be contiguous")
    return starts


def _column_stats(X: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations in float64, a chunk of rows at a time (no full-size temporary)."""
    n = len(X)
    total = np.zeros(X.shape[1])
    for i in range(0, n, chunk):
        total += X[i:i + chunk].sum(0, dtype=np.float64)
    mean = total / max(n, 1)
    sq = np.zeros(X.shape[1])
    for i in range(0, n, chunk):
        sq += ((X[i:i + chunk] - mean) ** 2).sum(0)
    return mean, np.sqrt(sq / max(n, 1))


def _group_softmax(scores: np.ndarray, starts: np.ndarray) -> np.ndarray:
    top = np.maximum.reduceat(scores, starts[:-1])
    sizes = np.diff(starts)
    e = np.exp(scores - np.repeat(top, sizes))
    return e / np.repeat(np.add.reduceat(e, starts[:-1]), sizes)


class ParentProbe(ClassifierMixin, BaseEstimator):
    """A linear scorer over candidate rows, trained with a softmax over each group's candidates.

    Each group is one dependent word; its rows are its candidate parents (every other word and
    ROOT), exactly one of them labelled positive. ``fit(X, y, groups=...)`` minimises the mean
    negative log-likelihood of the positive row plus ``alpha/2 · ||w||²`` (L-BFGS); ``predict``
    marks each group's highest-scoring row, and ``score`` is the share of groups whose pick is
    positive (UAS when the groups are words). Without ``groups`` every row is its own binary
    example and the model is an L2 logistic regression with an intercept, so it behaves as an
    ordinary binary classifier. Features are standardised with statistics of the training rows.
    """

    def __init__(self, alpha: float = 1e-3, max_iter: int = 300, tol: float = 1e-6, standardize: bool = True,
                 random_state: Any = None) -> None:
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    # ---------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, groups: Any = None) -> "ParentProbe":
        from scipy.optimize import minimize
        from sklearn.utils import check_random_state

        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "unknown") and kind != "binary":
            if kind == "multiclass":
                raise ValueError("Only binary classification is supported: y marks each group's parent row "
                                 f"(got {len(np.unique(y))} classes)")
            raise ValueError(f"Unknown label type: {kind}")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"y must hold two classes (the parent row and the others), got "
                             f"{len(self.classes_)} class")
        target = (y == self.classes_[1]).astype(np.float64)
        X = np.asarray(X, dtype=np.float32)
        n, d = X.shape
        if self.standardize:
            mean, scale = _column_stats(X)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        self.mean_ = mean.astype(np.float32)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0).astype(np.float32)
        # Standardisation is folded into the weights (s = X·(w/σ) − μ·(w/σ)), so X is never copied.
        inv, mu = 1.0 / self.scale_.astype(np.float64), self.mean_.astype(np.float64)

        def scores(w):
            v = w * inv
            return (X @ v.astype(np.float32)).astype(np.float64) - mu @ v

        def backward(r):
            return ((X.T @ r.astype(np.float32)).astype(np.float64) - mu * r.sum()) * inv

        grouped = groups is not None
        rng = check_random_state(self.random_state)
        w0 = rng.normal(scale=1e-3, size=d + (0 if grouped else 1))

        if grouped:
            starts = _segments(groups, n)
            positives = np.add.reduceat(target, starts[:-1])
            if np.any(positives != 1):
                bad = int(np.flatnonzero(positives != 1)[0])
                raise ValueError(f"group {bad} has {int(positives[bad])} positive rows; each group needs exactly one")
            m = len(starts) - 1
            seg, sizes = starts[:-1], np.diff(starts)
            gold = np.flatnonzero(target == 1)

            def objective(w):
                s = scores(w)
                top = np.maximum.reduceat(s, seg)
                e = np.exp(s - np.repeat(top, sizes))
                total = np.add.reduceat(e, seg)
                nll = float(np.sum(top + np.log(total)) - np.sum(s[gold])) / m
                p = e / np.repeat(total, sizes)
                p[gold] -= 1.0
                return nll + 0.5 * self.alpha * w @ w, backward(p) / m + self.alpha * w
        else:
            def objective(w):
                s = scores(w[:-1]) + w[-1]
                p = 1.0 / (1.0 + np.exp(-s))
                eps = 1e-12
                nll = -np.mean(target * np.log(p + eps) + (1 - target) * np.log(1 - p + eps))
                g = p - target
                grad = np.concatenate([backward(g) / n, [g.mean()]])
                reg = np.concatenate([w[:-1], [0.0]])
                return nll + 0.5 * self.alpha * w[:-1] @ w[:-1], grad + self.alpha * reg

        res = minimize(objective, w0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": self.tol})
        w = res.x
        self.grouped_ = grouped
        self.coef_ = (w if grouped else w[:-1]).astype(np.float64)
        self.intercept_ = 0.0 if grouped else float(w[-1])
        self.n_iter_ = int(res.nit)
        self.converged_ = bool(res.success)
        return self

    # ---------------------------------------------------------------- using
    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        # float64, row by row independent of order and batch (chunks bound the memory).
        w = self.coef_ / self.scale_.astype(np.float64)
        b = self.intercept_ - float(self.mean_.astype(np.float64) @ w)
        out = np.empty(len(X))
        for i in range(0, len(X), 65536):
            out[i:i + 65536] = np.einsum("ij,j->i", np.asarray(X[i:i + 65536], dtype=np.float64), w) + b
        return out

    def predict_proba(self, X: Any, groups: Any = None) -> np.ndarray:
        s = self.decision_function(X)
        p = _group_softmax(s, _segments(groups, len(s))) if groups is not None else 1.0 / (1.0 + np.exp(-s))
        return np.stack([1.0 - p, p], 1)

    def pick(self, X: Any, groups: Any) -> np.ndarray:
        """Index (into the rows) of each group's highest-scoring row."""
        s = self.decision_function(X)
        starts = _segments(groups, len(s))
        top = np.maximum.reduceat(s, starts[:-1])
        hit = s == np.repeat(top, np.diff(starts))
        first = np.maximum.reduceat(np.where(hit, -np.arange(len(s)), -len(s)), starts[:-1])
        return -first

    def predict(self, X: Any, groups: Any = None) -> np.ndarray:
        check_is_fitted(self)
        if groups is None:
            return self.classes_[(self.decision_function(X) > 0).astype(int)]
        out = np.zeros(len(np.asarray(X)), dtype=int)
        out[self.pick(X, groups)] = 1
        return self.classes_[out]

    def score(self, X: Any, y: Any, groups: Any = None, sample_weight: Any = None) -> float:
        if groups is None:
            return super().score(X, y, sample_weight=sample_weight)
        y = np.asarray(y)
        return float(np.mean(y[self.pick(X, groups)] == self.classes_[1]))


class RelationProbe(ClassifierMixin, BaseEstimator):
    """The relation probe: standardised features of a gold (dependent, head) pair -> multinomial
    logistic regression over relation labels (an L2-regularised ``LogisticRegression``)."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000, random_state: Any = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "RelationProbe":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from sklearn.utils.multiclass import check_classification_targets

        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.scaler_ = StandardScaler().fit(X)
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        self.model_.fit(self.scaler_.transform(X), y)
        self.classes_ = self.model_.classes_
        self.n_iter_ = self.model_.n_iter_
        return self

    def _z(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.scaler_.transform(validate_data(self, X, reset=False))

    def decision_function(self, X: Any) -> np.ndarray:
        z = self._z(X)
        return self.model_.decision_function(z)

    def predict_proba(self, X: Any) -> np.ndarray:
        z = self._z(X)
        return self.model_.predict_proba(z)

    def predict(self, X: Any) -> np.ndarray:
        z = self._z(X)
        return self.model_.predict(z)


def relation_probe(*, C: float = 1.0, max_iter: int = 1000, random_state: Any = None) -> RelationProbe:
    """A :class:`RelationProbe` with the given settings."""
    return RelationProbe(C=C, max_iter=max_iter, random_state=random_state)
