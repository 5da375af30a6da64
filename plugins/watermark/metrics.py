"""Detection metrics (protocols.md §4), each a pure function of one :class:`Detections` table.

Shape of every result: ``metric(ground_truth, detections) -> {cell_label: {name: value}}``, one entry
per grid cell in order of first appearance, values plain floats / ints or ``None`` where undefined
(no marked or no unmarked image in the cell). ``ground_truth`` is unused: the table itself says which
rows are marked. Rows with ``marked = True`` are the marked images after the cell's attack (the
positives); rows with ``marked = False`` are the original images after the same attack (the negatives).

- ``watermark.tpr``: analytic threshold. An image is flagged iff its p-value <= the target FPR;
  ``tpr@t`` = flagged fraction of the positives, ``fpr@t`` = flagged fraction of the negatives (the
  observed false-positive rate, which should be near t when the null model holds). A row whose
  p-value is NaN is never flagged; a table with no p-value at all is an error.
- ``watermark.tpr_at_fpr``: empirical threshold from the negatives of the same cell. With N
  negatives and target t, let m = the largest integer with m / N <= t (computed in floating point).
  The threshold is the (m+1)-th largest negative score s*, and an image is flagged iff
  score > s* (strictly). Equivalently: the smallest observed score T such that the rule
  "score >= T" (ties at T flagged) has empirical FPR <= t. The realized FPR (``fpr@t``) therefore never
  exceeds t, and a positive tied with s* is a miss. Targets must lie in (0, 1). ``threshold@t`` is s*
  (None when s* is infinite).
- ``watermark.auroc``: P(score of a positive > score of a negative) + 1/2 P(equal), i.e. ties count
  one half (Mann-Whitney U with average ranks).
- ``watermark.bit_accuracy`` / ``watermark.word_accuracy``: over the positives, the mean fraction of
  decoded bits equal to the key's message bits / the fraction of images with every bit right.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.errors import UserError

from .detections import Detections

Values = dict[str, Any]


def _targets(fpr: float | Sequence[float], what: str) -> tuple[float, ...]:
    targets = (float(fpr),) if isinstance(fpr, (int, float)) else tuple(float(t) for t in fpr)
    if not targets:
        raise UserError(f"{what}: fpr must list at least one target")
    bad = [t for t in targets if not 0.0 < t < 1.0]
    if bad:
        raise UserError(f"{what}: every fpr target must be in (0, 1) (got {bad[0]!r})")
    if len(set(targets)) != len(targets):
        raise UserError(f"{what}: fpr lists a target twice ({list(targets)})")
    return targets


def _label(t: float) -> str:
    return f"{t:g}"


def _check_table(detections: Any, what: str) -> Detections:
    if not isinstance(detections, Detections):
        raise TypeError(f"{what} takes a Detections table, got {type(detections).__name__}")
    return detections


class _PerCell:
    input_type = "detections"
    protocol = "watermark-detection"
    version = "1"
    display = {"n_*": "integer"}
    breakdown = True  # per operation family of the attack (e.g. augly.disc21_like as the attack)
    name = "watermark"

    def __call__(self, ground_truth: Any, detections: Detections) -> dict[str, Values]:
        table = _check_table(detections, self.name)
        self.check(table)
        return {cell: self.values(sub) for cell, sub in table.by_cell()}

    def check(self, table: Detections) -> None:  # table-level requirements
        pass

    def values(self, table: Detections) -> Values:  # pragma: no cover - abstract
        raise NotImplementedError


class AnalyticTPR(_PerCell):
    """TPR at the analytic threshold (p-value <= target FPR), per cell; also the observed FPR."""

    protocol = "watermark-detection/analytic-threshold"
    name = "watermark.tpr"

    def __init__(self, fpr: float | Sequence[float] = (1e-6,)) -> None:
        self.targets = _targets(fpr, self.name)

    def check(self, table: Detections) -> None:
        if len(table) and not table.has_p_values:
            raise UserError(
                f"{self.name}: the detections have no p-values (the watermarking method reports none); "
                "use watermark.tpr_at_fpr, whose threshold comes from the unmarked images"
            )

    def values(self, table: Detections) -> Values:
        p = np.where(np.isnan(table.p_value), np.inf, table.p_value)  # NaN: never flagged
        pos, neg = p[table.marked], p[~table.marked]
        out: Values = {"n_marked": int(len(pos)), "n_unmarked": int(len(neg))}
        for t in self.targets:
            out[f"tpr@{_label(t)}"] = float(np.mean(pos <= t)) if len(pos) else None
            out[f"fpr@{_label(t)}"] = float(np.mean(neg <= t)) if len(neg) else None
        return out


def allowed_false_positives(n_negatives: int, target: float) -> int:
    """The largest m with m / n <= target in floating point (0 <= m < n for a target in (0, 1))."""
    m = int(np.floor(target * n_negatives))
    while m + 1 <= n_negatives and (m + 1) / n_negatives <= target:
        m += 1
    while m > 0 and m / n_negatives > target:
        m -= 1
    return m


class EmpiricalTPR(_PerCell):
    """TPR at an empirical FPR: threshold from the unmarked images of the same cell (strict >)."""

    protocol = "watermark-detection/empirical-threshold"
    name = "watermark.tpr_at_fpr"

    def __init__(self, fpr: float | Sequence[float] = (0.01, 0.001)) -> None:
        self.targets = _targets(fpr, self.name)

    def values(self, table: Detections) -> Values:
        pos, neg = table.score[table.marked], table.score[~table.marked]
        out: Values = {"n_marked": int(len(pos)), "n_unmarked": int(len(neg))}
        neg_desc = np.sort(neg)[::-1]
        for t in self.targets:
            key = _label(t)
            if not len(pos) or not len(neg):
                out[f"tpr@{key}"] = out[f"threshold@{key}"] = out[f"fpr@{key}"] = None
                continue
            thr = neg_desc[allowed_false_positives(len(neg), t)]
            out[f"tpr@{key}"] = float(np.mean(pos > thr))
            out[f"threshold@{key}"] = float(thr) if np.isfinite(thr) else None  # JSON has no infinity
            out[f"fpr@{key}"] = float(np.mean(neg > thr))
        return out


def auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(pos > neg) + 1/2 P(pos == neg) from average ranks; None without positives or negatives."""
    from scipy.stats import rankdata

    if not len(pos) or not len(neg):
        return None
    ranks = rankdata(np.concatenate([pos, neg]), method="average")
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


class AUROC(_PerCell):
    """Area under the ROC curve of the raw scores, marked vs unmarked images of each cell (ties 1/2)."""

    protocol = "watermark-detection/auroc"
    name = "watermark.auroc"

    def values(self, table: Detections) -> Values:
        return {"auroc": auroc(table.score[table.marked], table.score[~table.marked]),
                "n_marked": int(table.marked.sum()), "n_unmarked": int((~table.marked).sum())}


class _BitMetric(_PerCell):
    protocol = "watermark-detection/bits"

    def check(self, table: Detections) -> None:
        # a zero-bit method decodes no message: its bit metrics are "not applicable" (None), so one grid
        # can compare zero-bit and multi-bit methods; decoded bits without the true message are a bug
        if len(table) and table.bits is not None and table.message is None:
            raise UserError(f"{self.name}: the detections have decoded bits but no true message bits")

    def matches(self, table: Detections) -> np.ndarray:
        """(n_marked, k) booleans: decoded bit == message bit, over the marked rows."""
        rows = table.marked
        if table.bits is None or table.message is None:
            return np.zeros((0, 0), dtype=bool)
        return table.bits[rows] == table.message[rows]


class BitAccuracy(_BitMetric):
    """Mean fraction of message bits decoded right, over the marked images of each cell."""

    name = "watermark.bit_accuracy"

    def values(self, table: Detections) -> Values:
        eq = self.matches(table)
        return {"bit_accuracy": float(eq.mean(axis=1).mean()) if len(eq) and eq.shape[1] else None, "n_marked": int(len(eq))}


class WordAccuracy(_BitMetric):
    """Fraction of marked images whose whole message is decoded right, per cell."""

    name = "watermark.word_accuracy"

    def values(self, table: Detections) -> Values:
        eq = self.matches(table)
        return {"word_accuracy": float(eq.all(axis=1).mean()) if len(eq) else None, "n_marked": int(len(eq))}
