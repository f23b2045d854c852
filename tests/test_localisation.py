"""Localisation: PRO and pixel AUROC on hand-made maps, the synthetic defects, and
benchmarks/localisation.py end to end on the session's tiny AE run."""

import json
import sys

import numpy as np
import pytest

import evaluation
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import defects  # noqa: E402
import localisation  # noqa: E402


def two_regions():
    """One 4 x 5 image with two 2-pixel defect regions, in rows 0 and 3."""
    masks = np.zeros((1, 4, 5), bool)
    masks[0, 0, :2] = masks[0, 3, :2] = True
    return masks


# --- The metrics, against values worked out by hand ------------------------------------------

def test_a_perfect_map_has_pro_and_pixel_auroc_one():
    masks = two_regions()
    assert evaluation.per_region_overlap(masks, masks.astype(float)) == 1.0
    assert evaluation.pixel_auroc(masks, masks.astype(float)) == 1.0


def test_a_map_that_finds_one_of_two_regions_has_pro_one_half():
    # Region A above every clean pixel (0.5), region B below them all: the overlap is 1/2
    # from a false-positive rate of 0 until all clean pixels pass, at a rate of 1.
    masks = two_regions()
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, :2], maps[0, 3, :2] = 1.0, 0.0
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(0.5)
    # 2 x 16 (A above all clean pixels) of 4 x 16 pairs.
    assert evaluation.pixel_auroc(masks, maps) == pytest.approx(0.5)


def test_pro_weighs_regions_not_pixels():
    # A 1-pixel region found and a 7-pixel region missed: the per-pixel recall is 1/8, but
    # each region counts the same, so PRO is 1/2.
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 2, 2] = True
    masks[1, 0, :5] = masks[1, 1, :2] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 2, 2], maps[1][masks[1]] = 1.0, 0.0
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(0.5)


def test_pro_counts_each_image_s_regions_apart_and_joins_diagonal_neighbours():
    # Image 0: one pixel; image 1: a diagonal pair, one region (8-connected), so two regions.
    masks = np.zeros((2, 3, 3), bool)
    masks[0, 0, 0] = masks[1, 0, 0] = masks[1, 1, 1] = True
    maps = np.full(masks.shape, 0.5)
    maps[masks] = 0.0
    maps[1, 1, 1] = 1.0                      # half of image 1's region: (0 + 1/2) / 2
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(0.25)
    maps[0, 0, 0] = 1.0                      # and image 0's region: (1 + 1/2) / 2
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(0.75)


def test_pro_integrates_only_up_to_the_false_positive_limit():
    # 10 clean pixels, one above the 2-pixel region: the overlap is 0 up to a rate of 0.1, then
    # 1, so the area up to 0.3 is 0.2 and PRO 2/3; up to 0.1 it is 0.
    masks = np.zeros((1, 1, 12), bool)
    masks[0, 0, :2] = True
    maps = np.zeros(masks.shape)
    maps[0, 0, :2], maps[0, 0, 2] = 0.9, 1.0
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(2 / 3)
    assert evaluation.per_region_overlap(masks, maps, max_false_positive_rate=0.1) == 0.0
    # Straight lines between thresholds: half the region at 0.9, half tied with the clean
    # pixels at 0: the overlap rises from 1/2 to 1 over the rates 0.1 to 1.
    maps[0, 0, 1] = 0.0
    expected = (0.2 * 0.5 + 0.5 * 0.2 * (0.2 / 0.9) * 0.5) / 0.3
    assert evaluation.per_region_overlap(masks, maps) == pytest.approx(expected)


def test_metrics_refuse_masks_without_both_kinds_of_pixel():
    masks = np.zeros((1, 3, 3), bool)
    for metric in (evaluation.pixel_auroc, evaluation.per_region_overlap):
        with pytest.raises(evaluation.MetricUndefined):
            metric(masks, np.zeros(masks.shape))


# --- The defects ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(mnist_arrays):
    return mnist_arrays["x_test"][:30, ..., None].astype("float32") / 255


def test_defects_mask_exactly_the_pixels_they_changed(digits):
    defective, masks, kinds = defects.defect_set(digits, seed=3)
    assert sorted(set(kinds)) == sorted(defects.KINDS) and (kinds[:3] == defects.KINDS).all()
    assert defective.dtype == np.float32 and 0.0 <= defective.min() and defective.max() <= 1.0
    assert (masks.sum(axis=(1, 2)) >= defects.MIN_DEFECT_PIXELS).all()
    changed = np.abs(defective - digits).max(axis=-1)
    assert ((changed > 0) == masks).all()
    assert (changed[masks] >= defects.CHANGE_TOLERANCE).all()


def test_defects_are_the_same_for_a_seed_and_differ_between_seeds(digits):
    first, first_masks, _ = defects.defect_set(digits, seed=5)
    again, again_masks, _ = defects.defect_set(digits, seed=5)
    other, _, _ = defects.defect_set(digits, seed=6)
    assert (first == again).all() and (first_masks == again_masks).all()
    assert (first != other).any(axis=(1, 2, 3)).all()
    # A stroke or blob depends only on its image, the seed and its index.
    fewer, fewer_masks, kinds = defects.defect_set(digits[:9], seed=5)
    kept = kinds != "cutpaste"
    assert (fewer[kept] == first[:9][kept]).all() and (fewer_masks[kept] == first_masks[:9][kept]).all()


def test_cutpaste_takes_its_patch_from_another_image():
    # Two flat images: a patch of one pasted into the other changes a rectangle to its value.
    images = np.stack([np.full((12, 12, 1), 0.2, "float32"), np.full((12, 12, 1), 0.8, "float32")])
    defective, masks, _ = defects.defect_set(images, seed=0, kinds=("cutpaste",))
    for index, donor_value in ((0, 0.8), (1, 0.2)):
        rows, columns = np.nonzero(masks[index])
        assert masks[index].sum() == (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
        np.testing.assert_allclose(defective[index][masks[index]], donor_value)
    # A patch of a flat image pasted into itself changes nothing: no defect, after every draw.
    with pytest.raises(ValueError, match="no cutpaste defect"):
        defects.make_defect("cutpaste", images[0], images, np.random.default_rng(0), exclude=1)


def test_smoothing_keeps_a_map_s_sum_so_its_image_score():
    maps = np.random.default_rng(0).random((2, 28, 28))
    smoothed = localisation.smooth(maps, 2.0)
    assert not np.allclose(smoothed, maps)
    np.testing.assert_allclose(smoothed.sum(axis=(1, 2)), maps.sum(axis=(1, 2)), rtol=1e-10)


def test_ssim_map_is_zero_for_equal_images_and_grows_with_a_change(digits):
    images = digits[:2]
    assert np.abs(localisation.ssim_map(images, images)).max() < 1e-9
    changed = images.copy()
    changed[:, 10:14, 10:14] = 1.0 - changed[:, 10:14, 10:14]
    dissimilarity = localisation.ssim_map(images, changed)
    assert dissimilarity[:, 12, 12].min() > 0.1 and dissimilarity[:, 0, 0].max() < 1e-9


# --- The benchmark end to end --------------------------------------------------------------

def test_benchmark_scores_every_map_per_kind_and_draws_them(trained_runs, tmp_path, capsys):
    out, pictures = tmp_path / "loc.json", tmp_path / "loc.png"
    assert localisation.main([str(trained_runs / "ae"), "--images", "9", "--seed", "1",
                              "--out", str(out), "--pictures", str(pictures)]) == 0
    summary = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert summary["defect_counts"] == {kind: 3 for kind in defects.KINDS}
    assert summary["run_map"] == "relative"
    assert summary["best_map"] in summary["maps"] and not localisation.is_baseline(
        summary["best_map"])
    assert localisation.is_baseline(summary["best_baseline"])
    names = [f"{base}{suffix}" for base in localisation.BASE_MAPS
             for suffix in ("", "+gauss1", "+gauss2")]
    assert sorted(summary["maps"]) == sorted(names)
    for figures in summary["maps"].values():
        assert sorted(figures) == sorted([*defects.KINDS, "all"])
        for values in figures.values():
            assert all(0.0 <= values[key] <= 1.0 for key in
                       ("image_auroc", "image_auroc_max", "pixel_auroc", "pro"))
    # Smoothing keeps the sum, so the image AUROC by the sum; the relative map's sum is the
    # run's anomaly score.
    maps = summary["maps"]
    assert maps["relative+gauss2"]["all"]["image_auroc"] == maps["relative"]["all"]["image_auroc"]
    assert pictures.stat().st_size > 5000


def test_benchmark_refuses_more_images_than_the_run_holds(trained_runs, tmp_path, capsys):
    assert localisation.main([str(trained_runs / "ae"), "--images", "1000",
                              "--out", str(tmp_path / "loc.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lower --images" in err[0] and not (tmp_path / "loc.json").exists()


def test_the_best_map_is_the_model_s_by_pixel_auroc_then_pro():
    def figures(pixel_auroc, pro):
        return {"all": {"pixel_auroc": pixel_auroc, "pro": pro}}

    results = {"relative": figures(0.9, 0.9), "ssim+gauss1": figures(0.9502, 0.4),
               "ssim": figures(0.9498, 0.5), "intensity": figures(0.99, 0.9),
               "mean-distance+gauss2": figures(0.98, 0.95)}
    # 0.9502 and 0.9498 tie at 3 decimals: PRO decides. Baselines never win the model's map.
    assert localisation.best_map(results) == "ssim"
    assert localisation.best_map(results, baselines=True) == "intensity"
