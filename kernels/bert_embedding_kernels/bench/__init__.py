"""Everything that measures and presents; the core (:mod:`bert_embedding_kernels`) never imports it.

``cases`` (the one grid of shapes and the id generators), ``timing`` (the one
timing engine), ``reference`` (the naive float64 references and the agreement
rules), ``roofline`` (the copy every run carries), ``peers`` (outside
implementations as registry records), ``calibrate`` (the cost model's fit),
``report`` (measurement, plain data) and ``render`` (Markdown and plots),
``perf``, ``realdata``, ``benchtable`` and ``cli`` (``embench``).
"""
