"""Each method's distance from the naive reference, tracked beside its speed.

A change that breaks the identity (a reordered sum, fastmath, a wrong row) shows
on the same site as a slowdown. gather and fused must stay at 0 (bit for bit);
onehot and concat at a bound ratio <= 1 (README, "Equivalence"). Those rules are
pinned in common.py (``BITWISE_METHODS``), not taken from the package measured:
a method that breaks them fails both track_ benchmarks instead of plotting a number.
"""

from dataclasses import replace

import numpy as np

from .common import BITWISE_METHODS, METHODS, bek, package_module, require_method, verify_sum

# Both landed in c9a97b2, and moved into the bench package with the registry.
_cases = package_module("bench.engine.cases", "bench.cases", "cases")
_reference = package_module("bench.engine.reference", "bench.reference", "equivalence")
Reference = _reference.Reference if _reference else None


class Equivalence:
    """max |y - naive| and the error-to-bound ratio at batch 4 x seq 128 x hidden 256."""

    params = (METHODS, ("float32", "float64"))
    param_names = ("method", "dtype")

    def setup(self, method, dtype):
        if Reference is None:
            raise NotImplementedError("kernels.equivalence is missing (before c9a97b2)")
        require_method(method)
        # The reference is a Python loop over tokens: the CI shape keeps it to a second.
        tables, input_ids, token_type_ids = _cases.make_inputs(replace(_cases.CI_BASE, dtype=dtype))
        out = np.full((*input_ids.shape, tables.token.shape[1]), np.nan, tables.token.dtype)
        y = bek.embed(tables, input_ids, token_type_ids, method=method, out=out)
        self.agreement = Reference(tables, input_ids, token_type_ids).compare(method, y)
        self.bitwise = method in BITWISE_METHODS
        # The suite's own naive reference and rules, whatever the package's say.
        self.verified = True
        try:
            verify_sum(y, tables, input_ids, token_type_ids, self.bitwise, method)
        except AssertionError as error:
            self.verified = str(error)

    def _checked(self, value):
        # A number would plot a broken method as a mere change; a failure stops the run.
        pinned = self.agreement.bitwise if self.bitwise else self.agreement.bound_ratio <= 1.0
        if self.verified is not True or not pinned or not self.agreement.ok:
            raise AssertionError(
                f"{self.agreement} breaks the guaranteed agreement "
                f"(pinned rule: {'bitwise' if self.bitwise else 'bound ratio <= 1'}; "
                f"naive check: {self.verified})"
            )
        return value

    def track_max_abs_diff(self, method, dtype):
        return self._checked(self.agreement.max_abs_diff)

    track_max_abs_diff.unit = "abs difference"

    def track_bound_ratio(self, method, dtype):
        return self._checked(self.agreement.bound_ratio)

    track_bound_ratio.unit = "error / bound"
