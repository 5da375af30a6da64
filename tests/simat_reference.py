"""Deliberately slow, obvious implementations of SIMAT's score and composed Recall@K (float64, Python
loops, one query at a time as the released eval.py reads), to test the vectorised ones against."""

from __future__ import annotations

import math


def _norm(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _linear(w, b, x):
    return [sum(float(w[o][i]) * float(x[i]) for i in range(len(x))) + (float(b[o]) if b is not None else 0.0)
            for o in range(len(w))]


def slow_rankings(images, words, queries, lam, heads=None):
    """Per query: every database row ordered by score (ties: lower row), the source removed."""
    img = [list(map(float, x)) for x in images]
    txt = {w: list(map(float, v)) for w, v in words.items()}
    if heads is not None:
        img = [_linear(heads["img_head.weight"], heads.get("img_head.bias"), x) for x in img]
        txt = {w: _linear(heads["txt_head.weight"], heads.get("txt_head.bias"), v) for w, v in txt.items()}
    img = [_norm(x) for x in img]
    txt = {w: _norm(v) for w, v in txt.items()}
    out = []
    for q in queries:
        src = img[q["source"]]
        texts = q["texts"]
        if len(texts) == 2:  # SIMAT arithmetic: (value, target)
            v, t = txt[texts[0]], txt[texts[1]]
            qv = [src[i] + lam * (t[i] - v[i]) for i in range(len(src))]
        else:  # sum composer
            m = txt[texts[0]]
            qv = [src[i] + lam * m[i] for i in range(len(src))]
        scores = [sum(a * b for a, b in zip(qv, x)) for x in img]
        order = sorted(range(len(img)), key=lambda j: (-scores[j], j))
        out.append([j for j in order if j != q["source"]])
    return out


def slow_simat_score(images, words, queries, oracle, lam, heads=None, k=1):
    """100 x weighted share of queries whose top-k (source removed) holds an oracle value > 0.5."""
    ranks = slow_rankings(images, words, queries, lam, heads)
    weights = [1.0 / math.sqrt(q["norm2"]) for q in queries]
    total = sum(weights)
    if not queries:
        return None
    acc = 0.0
    for q, r, w in zip(queries, ranks, weights):
        if any(float(oracle[j][q["caption"]]) > 0.5 for j in r[:k]):
            acc += w / total
    return 100.0 * acc


def slow_recall(images, words, queries, targets, lam, ks):
    ranks = slow_rankings(images, words, queries, lam)
    out = {}
    for k in ks:
        hits = [any(j in set(t) for j in r[:k]) for r, t in zip(ranks, targets)]
        out[k] = sum(hits) / len(hits) if hits else None
    return out
