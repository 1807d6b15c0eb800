"""Each method's distance from the naive reference, tracked beside its speed.

A change that breaks the identity (a reordered sum, fastmath, a wrong row) shows
on the same site as a slowdown. gather and fused must stay at 0 (bit for bit);
onehot and concat at a bound ratio <= 1 (README, "Equivalence").
"""

from dataclasses import replace

import kernels

from .common import METHODS, require_method

try:
    from kernels.bench.cases import CI_BASE, make_inputs
    from kernels.bench.reference import Reference
except ImportError:  # before the bench package
    try:
        from kernels.cases import CI_BASE, make_inputs
        from kernels.equivalence import Reference
    except ImportError:  # both landed in c9a97b2
        Reference = None


class Equivalence:
    """max |y - naive| and the error-to-bound ratio at batch 4 x seq 128 x hidden 256."""

    params = (METHODS, ("float32", "float64"))
    param_names = ("method", "dtype")

    def setup(self, method, dtype):
        if Reference is None:
            raise NotImplementedError("kernels.equivalence is missing (before c9a97b2)")
        require_method(method)
        # The reference is a Python loop over tokens: the CI shape keeps it to a second.
        tables, input_ids, token_type_ids = make_inputs(replace(CI_BASE, dtype=dtype))
        y = kernels.embed(tables, input_ids, token_type_ids, method=method)
        self.agreement = Reference(tables, input_ids, token_type_ids).compare(method, y)

    def _checked(self, value):
        # A number would plot a broken method as a mere change; a failure stops the run.
        if not self.agreement.ok:
            raise AssertionError(f"{self.agreement} breaks the guaranteed agreement")
        return value

    def track_max_abs_diff(self, method, dtype):
        return self._checked(self.agreement.max_abs_diff)

    track_max_abs_diff.unit = "abs difference"

    def track_bound_ratio(self, method, dtype):
        return self._checked(self.agreement.bound_ratio)

    track_bound_ratio.unit = "error / bound"
