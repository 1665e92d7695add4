"""Checks for the exercises: invariants whose messages teach.

An exercise gives a starter with ``...`` gaps; its check cell calls one check of the lesson's
module (``from rlmemlib.checks import ex02 as check``). An answer is unfinished while it holds a
gap: a ``...`` as ``exercises/`` hands it out, or ``raise NotImplementedError()`` as nbgrader's
release writes it. What a check does depends on the mode, read from the environment variable
``RLMEMLIB_CHECK_MODE``:

* learner (default): an unfinished answer prints "not yet" and the notebook runs on; a wrong
  answer raises :class:`CheckFailed` with what was expected, what came, and the likely
  mistake; a right one prints "ok".
* ``solution``: used on solutions/: an unfinished answer is an error.
* ``stub``: used on exercises/: a finished answer is an error, because a solution leaked into
  the exercises handed out.

>>> def area(w, h):
...     return ...
>>> is_unfinished(area)
True
>>> def area(w, h):
...     raise NotImplementedError()
>>> is_unfinished(area)
True
>>> def area(w, h):
...     return w * h
>>> is_unfinished(area)
False
"""

from __future__ import annotations

import ast
import inspect
import os
import textwrap
from typing import Callable

__all__ = ["CheckFailed", "ExerciseError", "mode", "is_unfinished", "run_check", "working", "expect"]

MODES = ("learner", "solution", "stub")


class CheckFailed(AssertionError):
    """A learner's answer broke an invariant; the message says what and why."""


class ExerciseError(RuntimeError):
    """The notebook itself is wrong for its folder (unfinished solution, leaked solution)."""


def mode() -> str:
    """The check mode: ``learner`` unless ``RLMEMLIB_CHECK_MODE`` says ``solution`` or ``stub``."""
    value = os.environ.get("RLMEMLIB_CHECK_MODE", "").strip().lower() or "learner"
    if value not in MODES:
        raise ExerciseError(f"RLMEMLIB_CHECK_MODE is {value!r}; expected one of {MODES}")
    return value


def _source(obj) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None


def _is_stub_raise(node) -> bool:
    """``raise NotImplementedError`` or ``raise NotImplementedError(...)``: nbgrader's stub."""
    if not isinstance(node, ast.Raise) or node.exc is None:
        return False
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _gap(obj) -> str | None:
    """The first gap left in a function, or in any method of a class, or None.

    ``...`` inside an index (``arr[..., 0]``) and in docstrings does not count.
    """
    if inspect.isclass(obj):
        functions = []
        for value in vars(obj).values():
            if isinstance(value, property):  # a property's getter, setter and deleter
                functions += [f for f in (value.fget, value.fset, value.fdel) if f is not None]
            elif inspect.isfunction(getattr(value, "__func__", value)):  # methods, static, class
                functions.append(getattr(value, "__func__", value))
        return next((gap for gap in map(_gap, functions) if gap is not None), None)
    src = _source(obj)
    if src is None:
        return "`...`" if obj is Ellipsis else None
    tree = ast.parse(src)
    in_index = {id(n) for sub in ast.walk(tree) if isinstance(sub, ast.Subscript)
                for n in ast.walk(sub.slice)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value is Ellipsis and id(node) not in in_index:
            return "`...`"
        if _is_stub_raise(node):
            return "`raise NotImplementedError()`"
    return None


def is_unfinished(obj) -> bool:
    """Whether a function, or any method of a class, still holds a gap: a ``...``, or nbgrader's
    ``raise NotImplementedError()``.

    ``...`` inside an index (``arr[..., 0]``) and in docstrings does not count.
    """
    return _gap(obj) is not None


def _name(obj) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def _not_yet(title: str, answer, gap: str) -> None:
    """An unfinished answer: an error in solution mode, "not yet" otherwise."""
    if mode() == "solution":
        raise ExerciseError(f"{title}: the solution still has a gap, {gap}, in {_name(answer)}")
    print(f"{title}: not yet. Replace the {gap} in {_name(answer)} with your code, "
          "then run this cell again.")


def run_check(title: str, answer, verify: Callable[[object], None]) -> None:
    """Check ``answer`` with ``verify`` according to the mode, and print the outcome.

    ``verify(answer)`` raises :class:`CheckFailed` with a teaching message when it is wrong.
    A ``NotImplementedError`` raised while it runs (nbgrader's stub, reached through code the
    answer calls) counts as a gap too.
    """
    gap = _gap(answer)
    if gap is not None:
        _not_yet(title, answer, gap)
        return
    if mode() == "stub":
        raise ExerciseError(f"{title}: {_name(answer)} has no gap left: a finished answer "
                            "leaked into the exercises handed out. Regenerate them from solutions/.")
    try:
        verify(answer)
    except NotImplementedError:
        _not_yet(title, answer, "`raise NotImplementedError()` it reaches")
        return
    print(f"{title}: ok")


def working(answer, fallback, verify: Callable[[object], None], what: str = ""):
    """The learner's ``answer`` if it passes ``verify``, else ``fallback``, saying which is used.

    Later cells that need a working implementation call this, so a learner who has not finished
    an exercise can still run the rest of the notebook. Any error while checking the answer
    (a wrong result, nbgrader's ``NotImplementedError``, a crash in the learner's code) means it
    has not passed.
    """
    label = what or _name(answer)
    if not is_unfinished(answer):
        try:
            verify(answer)
        except Exception:  # noqa: BLE001 - whatever went wrong, the answer did not pass
            pass
        else:
            print(f"Using your {label}.")
            return answer
    print(f"Using rlmemlib's {_name(fallback)} in place of your {label} until it passes its check.")
    return fallback


def expect(condition: bool, expected: str, got: str, hint: str) -> None:
    """Raise :class:`CheckFailed` with the three parts of a teaching message unless ``condition``.

    >>> expect(False, "len(memory) == 10", "11", "did add() overwrite the oldest slot once full?")
    Traceback (most recent call last):
    ...
    rlmemlib.checks.CheckFailed: expected len(memory) == 10, got 11: did add() overwrite the oldest slot once full?
    """
    if not condition:
        raise CheckFailed(f"expected {expected}, got {got}: {hint}")
