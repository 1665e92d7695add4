"""nbgrader end to end, for the 2nd, 4th, ... solutions notebook; the others run in
test_nbgrader.py at the same time. The tests and what they check: tests/nbgrader_course.py."""

from nbgrader_course import *  # noqa: F401,F403 - the tests, the fixture and the hook
from nbgrader_course import SOLUTIONS

ASSIGNMENTS = SOLUTIONS[1::2]
