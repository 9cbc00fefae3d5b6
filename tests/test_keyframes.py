"""Keyframes: the ramp time each change takes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from livemood.config import RAMP_TIME_S, Controls, UsageError
from livemood.controls import Ramp


def test_ramp_moves_at_the_rate_the_ramp_time_gives_and_zero_cuts() -> None:
    ramp = Ramp(2)
    old, new = np.array([0.8, 0.0]), np.array([0.0, 0.4])
    np.testing.assert_array_equal(ramp.step(old, 0, 0.0), old)  # a cut
    # A 2 s ramp moves each weight 0.5 per second, the old one down while the new one comes up...
    np.testing.assert_allclose(ramp.step(new, 400, 2.0), [0.6, 0.2])
    np.testing.assert_allclose(ramp.step(new, 800, 2.0), [0.4, 0.4])  # ...the smaller change arrives first...
    np.testing.assert_allclose(ramp.step(new, 1600, 2.0), new, atol=1e-12)  # ...and none takes longer than 2 s
    # Without a ramp time: the usual one, full scale in RAMP_TIME_S.
    np.testing.assert_allclose(ramp.step(old, 1600 + round(RAMP_TIME_S * 500)), [0.5, 0.0])


def test_controls_refuse_a_negative_or_endless_ramp() -> None:
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(UsageError, match="ramp must be 0 or more seconds"):
            Controls(ramp_s=bad)
