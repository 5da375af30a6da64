"""Post-processing steps (plugins/postprocess/steps.py) against explicit slow formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import UserError
from harness.parts import Postprocessor
from harness_plugins.postprocess.steps import POSTPROCESSORS, PCA, L2Normalize, PCAWhiten, ScoreNorm, Truncate


def correlated(rng, n, d):
    """Anisotropic, shifted data: PCA and whitening have something to undo."""
    mix = rng.standard_normal((d, d)) * np.linspace(3, 0.2, d)
    return (rng.standard_normal((n, d)) @ mix + 5).astype(np.float32)


def test_registry_and_contract():
    assert set(POSTPROCESSORS) == {"pca", "pca_whiten", "l2_normalize", "truncate", "score_norm", "shuffle_database"}
    for factory in POSTPROCESSORS.values():
        assert factory.version == "1"
    assert isinstance(PCA(4), Postprocessor)
    assert isinstance(ScoreNorm(), Postprocessor)


def test_pca_whiten_gives_identity_covariance_on_training_data():
    rng = np.random.default_rng(0)
    train = correlated(rng, 5000, 16)
    step = PCAWhiten(dim=8)
    step.fit(train)
    out = step.apply(train, "train")
    assert out.shape == (5000, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(out.T.astype(np.float64)), np.eye(8), atol=1e-3)


def test_pca_matches_explicit_formula_and_orders_variance():
    rng = np.random.default_rng(1)
    train = correlated(rng, 3000, 10)
    queries = correlated(rng, 50, 10)
    step = PCA(dim=4)
    step.fit(train)
    out = step.apply(queries, "queries")
    # Reference: eigenvectors of the sample covariance, up to sign per axis.
    x = train.astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(x.T))
    top = vectors[:, ::-1][:, :4]
    ref = (queries - x.mean(0)) @ top
    signs = np.sign((out * ref).sum(0))
    np.testing.assert_allclose(out, ref * signs, rtol=1e-3, atol=1e-3)
    var = step.apply(train, "train").var(0)
    assert np.all(np.diff(var) <= 1e-6)
    np.testing.assert_allclose(var, values[::-1][:4], rtol=1e-3)


def test_pca_is_fitted_on_training_data_only():
    rng = np.random.default_rng(2)
    train = correlated(rng, 1000, 6)
    step = PCAWhiten()
    step.fit(train)
    before = step.projection.copy()
    step.apply(correlated(rng, 100, 6) * 50, "database")  # applying never refits
    assert np.array_equal(step.projection, before)
    for cls in (PCA, PCAWhiten, ScoreNorm):
        with pytest.raises(UserError, match="needs a training split"):
            cls().fit(None)
    with pytest.raises(UserError, match="exceeds the descriptor dimension"):
        PCA(dim=7).fit(train)
    with pytest.raises(UserError, match="fit_on must be 'train'"):
        PCA(dim=2, fit_on="database")


def test_l2_normalize_and_truncate():
    x = np.array([[3, 4, 0], [0, 0, 0], [1, 1, 1]], np.float32)
    out = L2Normalize().apply(x, "queries")
    np.testing.assert_allclose(out, [[0.6, 0.8, 0], [0, 0, 0], [3**-0.5] * 3], rtol=1e-6)
    assert x[0, 0] == 3  # input untouched
    assert Truncate(dim=2).apply(x, "database").tolist() == [[3, 4], [0, 0], [1, 1]]
    assert Truncate(dim=256).apply(x, "database").shape == (3, 3)  # a cap, not a pad
    with pytest.raises(UserError, match="positive integer"):
        Truncate(dim=0)


def slow_similarity_stat(q, train, ranks):
    """Mean of q's sorted-descending training inner products at 0-based ranks ranks[0]..ranks[1]."""
    out = []
    for row in q.astype(np.float64):
        sims = sorted((float(row @ t) for t in train.astype(np.float64)), reverse=True)
        out.append(np.mean(sims[ranks[0] : ranks[1] + 1]))
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    factor=st.floats(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_score_norm_equals_the_explicit_formula(n, factor, seed):
    rng = np.random.default_rng(seed)
    train, queries, refs = (rng.standard_normal((m, 8)).astype(np.float32) for m in (40, 6, 9))
    step = ScoreNorm(n=n, factor=factor)
    step.fit(train)
    q, r = step.apply(queries, "queries"), step.apply(refs, "database")
    assert q.shape == (6, 9) and r.shape == (9, 9)
    got = q.astype(np.float64) @ r.T.astype(np.float64)  # what an inner-product index computes
    s_n = slow_similarity_stat(queries, train, (n - 1, n - 1))  # n-th nearest, 1-based
    ref = queries.astype(np.float64) @ refs.T.astype(np.float64) - factor * s_n[:, None]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_score_norm_sscd_variant():
    rng = np.random.default_rng(3)
    train, queries, refs = (rng.standard_normal((30, 5)).astype(np.float32) for _ in range(3))
    step = ScoreNorm(first=0, last=2, beta=0.5)
    step.fit(train)
    got = step.apply(queries, "queries").astype(np.float64) @ step.apply(refs, "database").T.astype(np.float64)
    ref = queries.astype(np.float64) @ refs.T - 0.5 * slow_similarity_stat(queries, train, (0, 2))[:, None]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert np.all(step.apply(train, "train")[:, -1] == 1)


def test_score_norm_parameter_errors():
    with pytest.raises(UserError, match="first <= last"):
        ScoreNorm(first=2, last=1)
    with pytest.raises(UserError, match="do not apply with first/last"):
        ScoreNorm(n=3, first=0, last=2)
    with pytest.raises(UserError, match="beta goes with first/last"):
        ScoreNorm(beta=1.0)
    with pytest.raises(UserError, match="at least 10 training vectors"):
        ScoreNorm(n=10).fit(np.zeros((5, 3), np.float32))


def test_shuffle_database_permutes_only_the_database():
    step = POSTPROCESSORS["shuffle_database"](seed=3)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    step.fit(None)
    assert np.array_equal(step.apply(x, "queries"), x)
    shuffled = step.apply(x, "database")
    assert not np.array_equal(shuffled, x)
    assert np.array_equal(np.sort(shuffled, axis=0), x)  # the same rows, reordered
    assert np.array_equal(shuffled, POSTPROCESSORS["shuffle_database"](seed=3).apply(x, "database"))


def test_stateless_steps_do_not_ask_for_training_data():
    for name in ("l2_normalize", "truncate", "shuffle_database"):
        assert POSTPROCESSORS[name].needs_training is False, name
    for name in ("pca", "pca_whiten", "score_norm"):
        assert getattr(POSTPROCESSORS[name], "needs_training", True) is True, name
