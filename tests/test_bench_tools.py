"""The by-hand benchmark's in-process tool (``bench/handler_cost.py``) still
drives a node's site to its answers: its stand-in for Redis answers the ADD
script by its arguments' layout, and a change of that layout broke it
unseen once."""

import importlib.util
from pathlib import Path

from twisted.trial import unittest

HANDLER_COST = Path(__file__).resolve().parent.parent / "bench" / "handler_cost.py"


class HandlerCostTests(unittest.TestCase):
    def test_it_measures_adds_and_batch_tasks_answered_as_created(self):
        spec = importlib.util.spec_from_file_location("handler_cost", HANDLER_COST)
        handler_cost = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler_cost)
        # It raises when an add is not answered 201, or a batch 200.
        figures = handler_cost.measure(repeats=1)
        self.assertEqual(set(figures), {"add_us", "batch_task_us"})
        self.assertTrue(all(value > 0 for value in figures.values()), figures)
