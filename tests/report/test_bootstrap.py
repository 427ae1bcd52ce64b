"""The bootstrap's mAP is COCOeval's, and its interval separates a real win from noise."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from report_fixtures import detections_for, eval_groundtruth

from sweep.report import bootstrap


def _coco_map(gt: dict, dets: list[dict]) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = gt
        g.createIndex()
        ev = COCOeval(g, g.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.parametrize(("seed", "skill"), [(0, 0.3), (1, 0.6), (2, 0.9), (3, 0.05)])
def test_map_on_the_original_images_is_cocoevals(seed: int, skill: float) -> None:
    gt = eval_groundtruth(n_images=16, seed=seed)
    dets = detections_for(gt, skill, seed=seed + 10)
    assert bootstrap.mean_ap(bootstrap.evaluate(gt, dets)) == pytest.approx(
        _coco_map(gt, dets), abs=1e-12)


@pytest.mark.parametrize("crowd", [False, True])
def test_an_image_drawn_twice_counts_twice(crowd: bool) -> None:
    """Counting image i twice = evaluating a data set with a renamed copy of image i. With
    crowd boxes, the detections matched to them are ignored (neither true nor false)."""
    gt = eval_groundtruth(n_images=8, seed=4)
    if crowd:
        for a in gt["annotations"][::3]:
            a["iscrowd"] = 1
    dets = detections_for(gt, 0.5, seed=5)
    pi = bootstrap.evaluate(gt, dets)
    assert crowd == (not all((c.hit | c.miss).all() for c in pi.classes))  # some ignored
    assert bootstrap.mean_ap(pi) == pytest.approx(_coco_map(gt, dets), abs=1e-12)
    counts = np.array([2, 0, 1, 1, 0, 3, 1, 0])
    images, anns, res = [], [], []
    for img, n in zip(gt["images"], counts, strict=True):
        for copy in range(n):
            new = f"{img['id']}#{copy}"
            images.append({"id": new})
            anns += [dict(a, id=len(anns) + 1 + j, image_id=new)
                     for j, a in enumerate(a for a in gt["annotations"] if a["image_id"] == img["id"])]
            res += [dict(d, image_id=new) for d in dets if d["image_id"] == img["id"]]
    copied = {"images": images, "annotations": anns, "categories": gt["categories"]}
    assert bootstrap.mean_ap(pi, counts) == pytest.approx(_coco_map(copied, res), abs=1e-12)


def test_one_set_of_draws_serves_every_comparison() -> None:
    """The report compares the best with many trials: the best's mAPs over the draws are
    computed once, and each interval is the one a separate paired bootstrap gives."""
    gt = eval_groundtruth(n_images=12, seed=8)
    best, a, b = (detections_for(gt, s, seed=9 + i) for i, s in enumerate((0.8, 0.5, 0.3)))
    pis = [bootstrap.evaluate(gt, d) for d in (best, a, b)]
    r = bootstrap.Resampler(12, resamples=100)
    first, second = r.interval(pis[1], pis[0]), r.interval(pis[2], pis[0])
    assert r.maps(pis[0])[0] is r.maps(pis[0])[0]
    assert first == bootstrap.paired(gt, a, best, resamples=100)
    assert second == bootstrap.paired(gt, b, best, resamples=100)
    assert first.diff < second.diff


def test_same_detections_differ_by_nothing() -> None:
    gt = eval_groundtruth(seed=6)
    dets = detections_for(gt, 0.5, seed=7)
    iv = bootstrap.paired(gt, dets, dets, resamples=200)
    assert iv.diff == 0 and iv.low == 0 and iv.high == 0 and not iv.real


def test_a_clear_win_is_real_and_a_coin_flip_is_not() -> None:
    gt = eval_groundtruth(n_images=16, seed=8)
    weak, strong = detections_for(gt, 0.2, seed=9), detections_for(gt, 0.95, seed=10)
    win = bootstrap.paired(gt, weak, strong, resamples=300)
    assert win.diff > 0 and win.low > 0 and win.real and win.low <= win.diff <= win.high
    assert (win.n_images, win.resamples) == (16, 300)
    # Two detectors of the same skill, different luck: their difference is noise.
    a, b = detections_for(gt, 0.6, seed=11), detections_for(gt, 0.6, seed=12)
    tie = bootstrap.paired(gt, a, b, resamples=300)
    assert tie.low < 0 < tie.high and not tie.real
