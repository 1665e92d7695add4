"""nbgrader end to end, for every other solutions notebook (the 1st, 3rd, ...); the rest run in
test_nbgrader_2.py at the same time. The tests and what they check: tests/nbgrader_course.py."""

from nbgrader_course import *  # noqa: F401,F403 - the tests, the fixture and the hook
from nbgrader_course import SOLUTIONS

ASSIGNMENTS = SOLUTIONS[0::2]
