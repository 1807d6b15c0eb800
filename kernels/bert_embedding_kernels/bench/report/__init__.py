"""``embench report`` (``measure``, ``render``, ``plots``, ``calibrate``, ``family_axis``) and
what reads or judges at one shape or across runs (``at_shape``, ``compare``, ``benchtable``)."""
