"""The race's bookkeeping: rung sizes, who goes on (ties to the faster), who wins, its record."""

from __future__ import annotations

import math

from snugtune.recipe.race import Entrant, Race, noise, pick_winner, rung_sizes, survivors


def test_rungs_double_up_to_every_image_from_a_floor() -> None:
    assert rung_sizes(8000, 3, 200) == [4000, 8000]  # 3 candidates: 2 rungs
    assert rung_sizes(8000, 5, 200) == [2000, 4000, 8000]
    assert rung_sizes(8000, 1, 200) == [8000] and rung_sizes(8000, 2, 200) == [8000]
    assert rung_sizes(300, 5, 200) == [200, 200, 300]  # the floor, at most every image
    assert rung_sizes(100, 3, 200) == [100, 100]


def _e(name: str, acc: float, speed: float, rungs: int = 1) -> Entrant:
    return Entrant(name, images_per_s=speed, rungs=tuple((100 * (i + 1), acc, 1.0)
                                                          for i in range(rungs)))


def test_the_better_half_goes_on_and_a_tie_goes_to_the_faster() -> None:
    a, b, c = _e("a", 0.9, 100), _e("b", 0.8, 900), _e("c", 0.9, 300)
    assert [e.name for e in survivors([a, b, c])] == ["c", "a"]  # 2 of 3: tie 0.9, c faster
    assert [e.name for e in survivors([b, a])] == ["a"]
    # a candidate that went further beats one that stopped earlier with a higher accuracy
    assert max([_e("early", 0.99, 1), _e("late", 0.5, 1, rungs=2)], key=lambda e: e.score).name == "late"


def test_the_record_survives_its_json() -> None:
    race = Race(entrants=(_e("a", 0.9, 100, 2), Entrant("x", dropped="does not fit: ...")),
                winner="a", reason="the only candidate that raced", seconds=12.5,
                budget_seconds=60.0, val_images=200)
    assert Race.from_dict(race.to_dict()) == race


def test_noise_is_the_standard_error_of_a_difference_of_two_accuracies() -> None:
    assert math.isclose(noise(0.9417, 0.9382, 1457), 0.00880, abs_tol=1e-5)
    assert noise(1.0, 1.0, 100) == 0.0 and noise(0.5, 0.5, 0) == math.sqrt(0.5)


def test_a_slower_leader_must_win_by_more_than_one_standard_error() -> None:
    # Animal-MNIST's second race: Lite2 led by 0.35 points, one standard error being 0.88
    lite0 = Entrant("lite0", images_per_s=370, rungs=((2914, 0.9362, 1), (5828, 0.9382, 1)))
    lite1 = Entrant("lite1", images_per_s=309, rungs=((2914, 0.9286, 1),))
    lite2 = Entrant("lite2", images_per_s=296, rungs=((2914, 0.9293, 1), (5828, 0.9417, 1)))
    winner, why = pick_winner([lite0, lite1, lite2], 1457)
    assert winner is lite0
    assert "within one standard error (0.88 points on 1457" in why and "lite2's 94.17%" in why
    # by two standard errors, the slower one wins, and the reason names the rival
    ahead = Entrant("lite2", images_per_s=296, rungs=((2914, 0.93, 1), (5828, 0.9582, 1)))
    winner, why = pick_winner([lite0, lite1, ahead], 1457)
    assert winner is ahead and "against 93.82% for lite0" in why


def test_halvings_eliminations_stand() -> None:
    # the fastest lost the first rung by less than the noise: out all the same (the leader's
    # accuracy on fewer training images says less); among the finalists the noise decides
    fast = Entrant("fast", images_per_s=900, rungs=((100, 0.80, 1),))
    mid = Entrant("mid", images_per_s=300, rungs=((100, 0.82, 1), (200, 0.975, 1)))
    slow = Entrant("slow", images_per_s=100, rungs=((100, 0.83, 1), (200, 0.99, 1)))
    assert pick_winner([fast, mid, slow], 100)[0] is mid  # 0.015 < 0.0185 of noise
    assert pick_winner([fast, mid, slow], 10_000)[0] is slow  # 0.015 > 0.00185
    assert pick_winner([slow], 100) == (slow, "the only candidate that can train here")
