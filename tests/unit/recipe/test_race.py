"""The race's bookkeeping: rung sizes, who goes on (ties to the faster), its record, its cost."""

from __future__ import annotations

from snugtune.recipe.race import Entrant, Race, rung_sizes, survivors


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
