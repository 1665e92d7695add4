"""nbgrader end to end, for every other solutions notebook (the 1st, 3rd, ...); the rest run in
test_nbgrader_2.py at the same time. The tests and what they check: tests/nbgrader_course.py."""

from nbgrader_course import *  # noqa: F401,F403 - the tests, the fixture and the hook
from nbgrader_course import CONFIG, ROOT, SOLUTIONS

ASSIGNMENTS = SOLUTIONS[0::2]


def test_the_readme_gives_teachers_the_tested_configuration_and_commands():
    readme = (ROOT / "README.md").read_text()
    teachers = readme.split("## For teachers", 1)[1].split("\n## ", 1)[0]
    for line in CONFIG.splitlines():
        assert f"\n{line}" in teachers, line
    for command in ("source COURSE/.venv/bin/activate", "nbgrader generate_assignment 02_list_memory",
                    "nbgrader autograde 02_list_memory", "nbgrader generate_feedback 02_list_memory",
                    "submitted/LEARNER/02_list_memory/02_list_memory.ipynb"):
        assert command in teachers, command
    # "nbgrader is installed in .venv by either command above": both install the test extra
    assert '"nbgrader>=' in (ROOT / "pyproject.toml").read_text().split("test = [", 1)[1].split("]", 1)[0]
    assert 'f"{ROOT}[test]"' in (ROOT / "tools" / "course.py").read_text()
