"""nbval at a stated precision: executed outputs agree with the committed ones when their text agrees and
every number in it agrees to `REL_TOL` (relative), within one unit of its last printed digit (for numbers
printed with three or more significant digits), or within `ABS_TOL` (absolute). Runs of whitespace may
differ (pandas re-pads a column when one number prints one character wider, as "-0.000" does).

Why: the last bits of a float depend on the CPU's kernels (OpenBLAS picks kernels by CPU type, ATen picks
AVX-512, AVX2 or scalar paths), so a bit-for-bit comparison fails on a reader's machine although nothing
is wrong. Integers (counts, token ids, layer numbers) are still compared exactly, and so is every
character between the numbers. Figures are compared as their JSON text, with plotly's base64 typed
arrays (`bdata`) decoded to numbers first.

`conftest.py` installs this as nbval's comparison: nbval's own exact comparison runs first, and only a
cell it rejects is re-checked here, so its messages are kept for cells that really differ.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from emolib.book.plots import decode_typed_array

REL_TOL = 1e-3  # relative agreement of two decimals (three significant digits)
ABS_TOL = 1e-9  # below this, a number is zero (an exactly-zero variance share computes as 7e-33 or -2e-32)
NUMBER = re.compile(r"([-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")


def _last_place(token: str) -> float:
    """The value of one unit in the last printed digit: '0.415' -> 0.001, '3.2e-05' -> 1e-06."""
    mantissa, _, exponent = token.lower().lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def _is_integer(token: str) -> bool:
    return not any(c in token for c in ".eE")


def _significant_digits(token: str) -> int:
    mantissa = token.lower().lstrip("+-").partition("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def numbers_agree(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = float(a), float(b)
    if _is_integer(a) and _is_integer(b):
        return x == y
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    # one unit of the last printed digit absorbs a rounding flip, but only for numbers printed with three or
    # more significant digits: for "0.2" or "1e-3" a unit is 50-100 % of the value and would hide real changes
    short = min(_significant_digits(a), _significant_digits(b)) < 3
    unit = 0.0 if short else min(_last_place(a) if not _is_integer(a) else 1.0, _last_place(b) if not _is_integer(b) else 1.0)
    return abs(x - y) <= unit * (1 + 1e-9) + REL_TOL * max(abs(x), abs(y)) + ABS_TOL


def texts_agree(reference: str, test: str) -> bool:
    """The same text with every number agreeing (`numbers_agree`)."""
    if reference == test:
        return True
    left, right = NUMBER.split(reference), NUMBER.split(test)
    if len(left) != len(right):
        return False
    for i, (a, b) in enumerate(zip(left, right)):
        if i % 2 == 0:
            if a.split() != b.split() or (a[:1].isspace() != b[:1].isspace()) or (a[-1:].isspace() != b[-1:].isspace()):
                return False  # words must match; runs of spaces may differ (a table re-pads a column)
        elif not numbers_agree(a, b):
            return False
    return True


def _plain(obj: Any) -> Any:
    """A JSON value with plotly typed arrays decoded to lists."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            return decode_typed_array(obj).tolist()
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_plain(value) for value in obj]
    return obj


def _interval_width(record: dict) -> float:
    """|high − low| of a record that carries an interval (a slope with its bootstrap bounds), else 0."""
    low, high = record.get("low"), record.get("high")
    if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
        return abs(high - low)
    return 0.0


def values_agree(reference: Any, test: Any, width: float = 0.0) -> bool:
    """Saved values agree: texts and numbers as `texts_agree` reads them. Within a record that carries an
    interval (`low`, `high`), a float may also move by `REL_TOL` of the interval's width: an estimate near zero
    (a slope of 4e-4 fitted to projections of order 1) carries the inputs' absolute rounding, which a relative
    tolerance on the estimate itself would call a change, while its uncertainty is a thousand times larger."""
    if isinstance(reference, dict) and isinstance(test, dict) and _interval_width(reference) > 0:
        width = max(width, _interval_width(reference))
        return set(reference) == set(test) and all(values_agree(reference[k], test[k], width) for k in reference)
    if isinstance(reference, float) and isinstance(test, float) and width > 0:
        if abs(reference - test) <= REL_TOL * width:
            return True
    if isinstance(reference, list) and isinstance(test, list) and any(isinstance(v, dict) for v in reference):
        return len(reference) == len(test) and all(values_agree(a, b, width) for a, b in zip(reference, test))
    if isinstance(reference, dict) and isinstance(test, dict) and any(isinstance(v, (dict, list)) for v in reference.values()):
        return set(reference) == set(test) and all(values_agree(reference[k], test[k], width) for k in reference)
    if isinstance(reference, str) and isinstance(test, str):
        return texts_agree(reference, test)
    if isinstance(reference, (dict, list)) and isinstance(test, (dict, list)):
        dump = lambda value: json.dumps(_plain(value), sort_keys=True)  # noqa: E731
        return texts_agree(dump(reference), dump(test))
    if isinstance(reference, (int, float)) and isinstance(test, (int, float)):
        return numbers_agree(repr(reference), repr(test))
    return reference == test


def install() -> None:
    """Make nbval's cell comparison tolerant as described above."""
    from collections import defaultdict

    from nbval import plugin

    exact = plugin.IPyNbCell.compare_outputs
    if getattr(exact, "emolib_tolerant", False):
        return

    def flattened(item: Any, outputs: list, skip: set) -> dict[str, list]:
        flat: dict[str, list] = defaultdict(list)
        for output in plugin.transform_streams_for_comparison(outputs):
            for key, value in output.items():
                if key in skip:
                    continue
                if key == "data":
                    for mime, data in value.items():
                        if mime not in skip:
                            flat[mime].append(item.sanitize(data))
                else:
                    flat[key].append(item.sanitize(value))
        return flat

    def compare_outputs(self, test, ref, skip_compare=None):  # noqa: ANN001 (nbval's signature)
        if exact(self, test, ref, skip_compare):
            return True
        skip = set(skip_compare or self.parent.skip_compare)
        got, want = flattened(self, test, skip), flattened(self, ref, skip)
        if set(got) != set(want) or any(len(got[k]) != len(want[k]) for k in want):
            return False
        if all(values_agree(r, t) for key in want for r, t in zip(want[key], got[key])):
            self.comparison_traceback = []
            return True
        return False

    compare_outputs.emolib_tolerant = True  # type: ignore[attr-defined]
    plugin.IPyNbCell.compare_outputs = compare_outputs
