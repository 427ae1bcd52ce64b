"""Is the best trial's mAP really better than the base's, or eval-set noise?

A paired bootstrap over eval images (Efron & Tibshirani; the usual way to put an interval on a
corpus-level metric such as COCO mAP, which is not a mean of per-image scores):

1. pycocotools' ``COCOeval.evaluate`` matches each model's kept detections to the ground truth
   once, image by image (``sweep.odapi.detections`` files, the same ones the eval job's mAP came
   from), at the 10 IoU thresholds .50:.05:.95, all areas, 100 detections per image.
2. A resample draws the eval images with replacement, the same draw for both models (paired:
   image difficulty cancels out), and recomputes both mAPs with COCOeval's own accumulation
   (all-point interpolated precision at 101 recall points, averaged over IoUs and the classes
   that have ground truth), an image drawn twice counting twice.
3. The 2.5th and 97.5th percentiles of ``best - base`` over the resamples are the 95% interval;
   if it contains 0, the difference is within what another draw of eval images could give.

On the original images (every image once) the accumulation reproduces COCOeval's mAP exactly
(tests/report/test_bootstrap.py), so the point estimate is the mAP in the event files.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweep.core.once import OnceMap

RESAMPLES = 1000
LEVEL = 0.95
_QUIET = threading.Lock()


@dataclass
class _Class:
    """One class's detections over all images, sorted by score as COCOeval sorts them."""

    image: np.ndarray  # [D] index of the image each detection is on
    hit: np.ndarray  # [T, D] matched and not ignored
    miss: np.ndarray  # [T, D] unmatched and not ignored
    gt: np.ndarray  # [N] non-ignored ground truth boxes per image


@dataclass
class PerImage:
    """COCOeval.evaluate's per-image matching (area "all", 100 detections), per class."""

    image_ids: list[Any]
    classes: list[_Class]
    rec_thrs: np.ndarray


def evaluate(groundtruth: dict[str, Any], detections: list[dict[str, Any]]) -> PerImage:
    """Match ``detections`` (COCO results) to ``groundtruth`` (COCO dataset), per image."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # pycocotools prints progress. sys.stdout is one for all threads: one redirect at a time
    # (COCOeval is pure Python and holds the GIL anyway).
    with _QUIET, contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": groundtruth["images"],
                      "annotations": groundtruth["annotations"],
                      "categories": groundtruth["categories"]}
        gt.createIndex()
        dt = gt.loadRes(detections) if detections else COCO()
        if not detections:
            dt.dataset = {"images": groundtruth["images"], "annotations": [],
                          "categories": groundtruth["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        # Area "all" only: COCOeval matches every image again for each of its 4 area ranges,
        # and only "all" enters mAP; the matching of one range does not depend on the others.
        ev.params.areaRng, ev.params.areaRngLbl = ev.params.areaRng[:1], ev.params.areaRngLbl[:1]
        ev.evaluate()
    p = ev.params
    n_img, n_area, n_iou = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
    max_det = p.maxDets[-1]
    classes = []
    for k in range(len(p.catIds)):
        cells = [(i, ev.evalImgs[k * n_area * n_img + i]) for i in range(n_img)]  # area "all"
        cells = [(i, e) for i, e in cells if e is not None]
        gt_n = np.zeros(n_img, dtype=float)
        for i, e in cells:
            gt_n[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        if cells:
            scores = np.concatenate([np.asarray(e["dtScores"][:max_det], float) for _, e in cells])
            image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i) for i, e in cells])
            matched = np.concatenate([np.asarray(e["dtMatches"])[:, :max_det] > 0
                                      for _, e in cells], axis=1)
            ignored = np.concatenate([np.asarray(e["dtIgnore"])[:, :max_det].astype(bool)
                                      for _, e in cells], axis=1)
        else:
            scores, image = np.zeros(0), np.zeros(0, dtype=int)
            matched = ignored = np.zeros((n_iou, 0), dtype=bool)
        order = np.argsort(-scores, kind="mergesort")  # as COCOeval.accumulate
        matched, ignored = matched[:, order], ignored[:, order]
        classes.append(_Class(image[order].astype(int), matched & ~ignored,
                              ~matched & ~ignored, gt_n))
    return PerImage(list(p.imgIds), classes, np.asarray(p.recThrs))


def mean_ap(pi: PerImage, counts: np.ndarray | None = None) -> float:
    """COCO mAP@[.50:.95] with image ``i`` counted ``counts[i]`` times (default: once each);
    NaN when no class has ground truth in the draw."""
    c = np.ones(len(pi.image_ids)) if counts is None else np.asarray(counts, float)
    return float(mean_aps(pi, c[None, :])[0])


CHUNK = 2_000_000  # array cells per batch of resamples (memory stays ~100 MB)


def mean_aps(pi: PerImage, counts: np.ndarray, exact: bool = True) -> np.ndarray:
    """:func:`mean_ap` for each row of ``counts`` ([draws, images]), vectorized.

    ``exact=False`` computes in float32: half the memory traffic of the [draws, IoUs,
    detections] arrays, for resamples whose spread is all that is read (precision then differs
    from COCOeval's float64 by ~1e-7; true and false positive counts stay exact).

    An image counted n times weighs its detections n times in the cumulative true and false
    positives: the same precision-recall envelope as n copies of it (ties aside). A detection
    on an undrawn image adds nothing and only repeats a point, which changes no envelope."""
    counts = np.asarray(counts, float)
    per_class = []
    for c in pi.classes:
        n_iou, n_det = c.hit.shape
        ap = np.empty(len(counts))
        step = max(1, CHUNK // max(1, n_iou * n_det))
        for lo in range(0, len(counts), step):
            ap[lo:lo + step] = _class_ap(c, counts[lo:lo + step], pi.rec_thrs,
                                         np.float64 if exact else np.float32)
        per_class.append(ap)
    if not per_class:
        return np.full(len(counts), np.nan)
    with np.errstate(all="ignore"):
        stacked = np.vstack(per_class)  # classes without ground truth in a draw are NaN
        return np.where(np.isnan(stacked).all(axis=0), np.nan, np.nanmean(stacked, axis=0))


def _class_ap(c: _Class, counts: np.ndarray, rec_thrs: np.ndarray, dtype: type = np.float64
              ) -> np.ndarray:
    draws, (n_iou, n_det) = len(counts), c.hit.shape
    npig = counts @ c.gt  # [B], float64: recall is compared with the thresholds as COCOeval does
    q = np.zeros((draws, n_iou, len(rec_thrs)), dtype)
    if n_det:
        w = counts[:, c.image].astype(dtype)  # [B, D]
        tp = np.cumsum(c.hit[None] * w[:, None, :], axis=2)
        if (c.hit | c.miss).all():  # none ignored (the usual case): false = all - true
            fp = np.cumsum(w, axis=1)[:, None, :] - tp  # whole numbers: exact
        else:
            fp = np.cumsum(c.miss[None] * w[:, None, :], axis=2)
        with np.errstate(all="ignore"):
            rc = tp / npig[:, None, None]
        pr = np.add(fp, tp, out=fp)
        pr += np.spacing(dtype(1))
        np.divide(tp, pr, out=pr)
        pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]  # precision envelope
        # Row by row: recall compared with the thresholds exactly as COCOeval compares them.
        idx = np.array([row.searchsorted(rec_thrs, side="left")
                        for row in rc.reshape(-1, n_det)]).reshape(draws, n_iou, -1)
        ok = idx < n_det
        q = np.where(ok, np.take_along_axis(pr, np.minimum(idx, n_det - 1), axis=2), dtype(0))
    ap = q.mean(axis=(1, 2), dtype=np.float64)
    ap[npig == 0] = np.nan  # COCOeval leaves such a class at -1, out of the mean
    return ap


def draw_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, n]``: how many times each of ``n`` eval images is drawn in each bootstrap
    resample (with replacement). The same ``seed`` gives the same draws."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], rng.integers(0, n, (resamples, n))), 1)
    return counts


@dataclass
class Interval:
    base_map: float
    best_map: float
    low: float  # of best - base
    high: float
    n_images: int
    resamples: int
    level: float = LEVEL

    @property
    def diff(self) -> float:
        return self.best_map - self.base_map

    @property
    def real(self) -> bool:
        """The interval excludes 0: the difference is larger than the eval set's noise."""
        return self.low > 0 or self.high < 0


def paired(groundtruth: dict[str, Any], base: list[dict], best: list[dict], *,
           resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mAP of ``best`` minus that of ``base`` on the same eval images, with a
    ``LEVEL`` percentile interval from ``resamples`` paired bootstrap draws."""
    return paired_evaluated(evaluate(groundtruth, base), evaluate(groundtruth, best),
                            resamples=resamples, seed=seed)


def paired_evaluated(a: PerImage, b: PerImage, *, resamples: int = RESAMPLES, seed: int = 0
                     ) -> Interval:
    """``paired`` for detections already matched by ``evaluate`` (one COCOeval per model,
    however many comparisons it takes part in)."""
    return Resampler(len(a.image_ids), resamples, seed).interval(a, b)


class Resampler:
    """One set of paired draws over ``n`` eval images, shared by every comparison on those
    images: each model's mAPs over the draws are computed once however many comparisons it is
    in (the report compares the best with ten others and with the base)."""

    def __init__(self, n: int, resamples: int = RESAMPLES, seed: int = 0) -> None:
        self.n, self.counts = n, draw_counts(n, resamples, seed)
        self._maps = OnceMap()

    def maps(self, pi: PerImage) -> tuple[np.ndarray, float]:
        """``pi``'s mAP on each draw and on the original images (threads asking for the
        same model wait for one computation)."""
        if len(pi.image_ids) != self.n:
            raise ValueError(f"{len(pi.image_ids)} images, the draws are over {self.n}")
        # Keyed by id: the entry keeps the PerImage, so its id is not reused.
        entry = self._maps.get(id(pi), lambda: (pi, mean_aps(pi, self.counts, exact=False),
                                                mean_ap(pi)))
        return entry[1], entry[2]

    def interval(self, a: PerImage, b: PerImage) -> Interval:
        """The mAP of ``b`` minus that of ``a``, with its percentile interval."""
        (draws_a, map_a), (draws_b, map_b) = self.maps(a), self.maps(b)
        return _interval(map_a, map_b, draws_b - draws_a, self.n)


def _interval(map_a: float, map_b: float, d: np.ndarray, n: int) -> Interval:
    diffs = d[np.isfinite(d)]
    tail = (1 - LEVEL) / 2
    low, high = (np.quantile(diffs, [tail, 1 - tail]) if len(diffs) else (float("nan"),) * 2)
    return Interval(map_a, map_b, float(low), float(high), n, len(diffs))
