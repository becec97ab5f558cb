# Cost arguments: any Python number (numpy scalars included) to a C double, with named errors.
#
# Promise: cost_arg(cost) returns the cost as a double, or raises TypeError (not a number:
# strings included) or InvalidCost (a bool: True is not a cost of 1), naming the argument.
# An int too large for a double comes back as +-inf, which the limiter then refuses as
# InvalidCost like any infinite cost (never OverflowError). NaN and negative values pass
# through: each limiter's own check names them.
# Cost: an exact float (the default 1.0 included) is one type check and one load; anything
# else takes the out-of-line cost_value().
# Worked example: cost_arg(2.5) -> 2.5; cost_arg(3) -> 3.0; cost_arg(numpy.int32(4)) -> 4.0;
# cost_arg(10**400) -> inf; cost_arg("2") raises TypeError("cost must be a number, got '2'").
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact


cdef double cost_value(object cost) except? -1.0
cdef object batch_cost_values(object costs)


cdef inline double cost_arg(object cost) except? -1.0:
    if PyFloat_CheckExact(cost):
        return PyFloat_AS_DOUBLE(cost)
    return cost_value(cost)
