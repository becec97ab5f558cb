"""Cost arguments to C doubles with named errors (see cost.pxd)."""
from cpython.long cimport PyLong_AsDouble, PyLong_CheckExact

import numpy as np

from fastcore._units import as_real, shown
from fastcore.errors import InvalidCost


cdef double cost_value(object cost) except? -1.0:
    """The cold path of cost_arg: ints (exact or huge), numpy scalars, and refusals."""
    if PyLong_CheckExact(cost):
        try:
            return PyLong_AsDouble(cost)
        except OverflowError:
            return float("inf") if cost > 0 else float("-inf")
    if isinstance(cost, (bool, np.bool_)):
        raise InvalidCost(f"cost must be a number, not a bool: got {cost!r}")
    value = as_real(cost)
    if value is None:
        raise TypeError(f"cost must be a number, got {shown(cost)}")
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


cdef object batch_cost_values(object costs):
    """A batch's costs as a flat float64 array: numbers only (no strings, no bools), with
    the same conversions as cost_arg; raises before anything is decided."""
    array = np.asarray(costs)
    kind = array.dtype.kind
    if kind in "iuf":
        return np.ascontiguousarray(array, dtype=np.float64).reshape(-1)
    if kind == "b":
        raise InvalidCost("costs must be numbers, not bools")
    if kind == "O":
        return np.array([cost_value(item) for item in array.reshape(-1)], dtype=np.float64)
    raise TypeError(f"costs must be numbers, got an array of {array.dtype} "
                    f"(first {shown(array.reshape(-1)[0] if array.size else None)})")
