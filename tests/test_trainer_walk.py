"""The trainer reads top to bottom: following the config through ``train(cfg)`` (one step that logs,
checkpoints, samples and evaluates) enters no module other than the trainer more than twice.

The walk is counted by ``benchmarks/trainer_walk.py`` with a profiler hook (every call of a ``scoresde``
function that receives the config or one of its sections).
"""

import collections
import os
import runpy

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "trainer_walk.py")


@pytest.mark.usefixtures("one_thread")
def test_the_config_enters_no_module_more_than_twice(tmp_path):
    bench = runpy.run_path(SCRIPT)
    walk = bench["walk_of_train"](bench["one_step_config"](str(tmp_path / "run")))
    rooms = [m for i, (m, _) in enumerate(walk) if i == 0 or walk[i - 1][0] != m]
    entries = collections.Counter(m for m in rooms if m != "scoresde.train")
    # the walk saw the whole step: validation, data, builders, sampling of the grid and the evaluation
    assert {"scoresde.validation", "scoresde.datastream", "scoresde.builders", "scoresde.images",
            "scoresde.evaluation"} <= set(entries)
    assert max(entries.values()) <= 2, entries
