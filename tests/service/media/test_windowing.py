"""Window math against values computed by hand from DICOM PS3.3 C.11.2.1.2."""

from __future__ import annotations

import numpy as np
import pytest

from service.media.windowing import PRESETS, Window, apply_window, percentile_window, to_rgb


def test_linear_brain_window_by_hand():
    # c=40, w=80: y = ((x - 39.5) / 79 + 0.5) * 255, rounded half up, clipped.
    x = np.array([-1000, 0, 20, 40, 79, 80, 1000], dtype=np.float32)
    # 20 -> (-19.5/79 + .5) * 255 = 64.56 -> 65;  40 -> (0.5/79 + .5) * 255 = 129.11 -> 129
    assert apply_window(x, Window(40, 80)).tolist() == [0, 0, 65, 129, 255, 255, 255]


def test_linear_exact_by_hand():
    # y = ((x - c) / w + 0.5) * 255; c=0, w=100: -50 -> 0, -25 -> 63.75 -> 64, 0 -> 127.5 -> 128
    x = np.array([-60, -50, -25, 0, 25, 50], dtype=np.float32)
    assert apply_window(x, Window(0, 100, "LINEAR_EXACT")).tolist() == [0, 0, 64, 128, 191, 255]


def test_sigmoid_by_hand():
    # y = 255 / (1 + exp(-4 (x - c) / w)); at x = c it is 127.5 -> 128; c=0, w=100:
    # x=25 -> 255 / (1 + e^-1) = 186.4 -> 186
    x = np.array([0, 25, -25], dtype=np.float32)
    assert apply_window(x, Window(0, 100, "SIGMOID")).tolist() == [128, 186, 69]


def test_width_one_is_a_threshold_not_a_division_by_zero():
    x = np.array([-1, 0, 1], dtype=np.float32)
    out = apply_window(x, Window(0.5, 1))
    assert out.tolist() == [0, 0, 255]


def test_lung_preset_by_hand():
    lung = PRESETS["lung"]  # c=-600, w=1500
    # -600 HU -> ((-600 + 600.5) / 1499 + .5) * 255 = 127.59 -> 128; air -1000 -> 59.6 -> 60
    x = np.array([-600, -1000, -1350, 150], dtype=np.float32)
    assert apply_window(x, lung).tolist() == [128, 60, 0, 255]


def test_presets_cover_the_issue_list():
    assert {
        "lung",
        "mediastinum",
        "abdomen",
        "liver",
        "bone",
        "brain",
        "subdural",
        "stroke",
    } <= set(PRESETS)


def test_percentile_window_ignores_outliers():
    values = np.concatenate([np.linspace(0, 100, 10_000), [1e6, -1e6]]).astype(np.float32)
    window = percentile_window(values)
    assert window.function == "LINEAR_EXACT"
    low, high = window.center - window.width / 2, window.center + window.width / 2
    assert low == pytest.approx(np.percentile(values, 0.5), rel=1e-6)
    assert high == pytest.approx(np.percentile(values, 99.5), rel=1e-6)
    assert 0 <= low < 1 and 99 < high <= 100


def test_percentile_window_of_a_flat_image_is_usable():
    window = percentile_window(np.full((4, 4), 7.0, dtype=np.float32))
    assert window.width > 0
    assert apply_window(np.full((4, 4), 7.0), window).dtype == np.uint8


def test_to_rgb_repeats_grey():
    grey = np.array([[1, 2]], dtype=np.uint8)
    assert to_rgb(grey).tolist() == [[[1, 1, 1], [2, 2, 2]]]


def test_a_steep_sigmoid_far_from_its_centre_is_black_and_white_without_warnings():
    import warnings

    values = np.array([-5000.0, 0.0, 5000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would fail here
        out = apply_window(values, Window(0.0, 1.0, "SIGMOID"))
    assert out.tolist() == [0, 128, 255]
