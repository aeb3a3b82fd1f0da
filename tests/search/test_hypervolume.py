import pytest

from dynlen.search.hypervolume import hypervolume


def test_single_point_is_a_rectangle():
    assert hypervolume([(80.0, 0.5)], f1_floor=60.0, cost_ceiling=1.0) == pytest.approx(0.5 * 20.0)


def test_staircase_of_two_points():
    # (cost 0.2, F1 70) covers [0.2, 0.6) x 10; (cost 0.6, F1 80) covers [0.6, 1.0) x 20
    assert hypervolume([(70.0, 0.2), (80.0, 0.6)], 60.0) == pytest.approx(0.4 * 10 + 0.4 * 20)


def test_dominated_and_outside_points_add_nothing():
    front = [(70.0, 0.2), (80.0, 0.6)]
    assert hypervolume(front + [(65.0, 0.7), (90.0, 1.5), (50.0, 0.1)], 60.0) == pytest.approx(hypervolume(front, 60.0))
