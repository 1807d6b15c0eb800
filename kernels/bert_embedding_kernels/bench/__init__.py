"""Everything that measures and presents; the core (:mod:`bert_embedding_kernels`) never imports it.

Three parts, named by what they do, and the command line over them:

- :mod:`.engine`: what every command shares: the one timing engine (``timing``), the grid of
  shapes and the id generators (``cases``), the naive references and agreement rules
  (``reference``), the copy every run carries (``roofline``, ``streaming``), the contenders
  and the outside implementations (``contenders``, ``peers``, ``onnx_peers``), the machine and
  its noise (``machine``, ``noise``), the one rule every verdict follows (``verdict``), budgets
  and progress (``plan``, ``progress``), argument types (``options``) and real text (``realdata``);
- :mod:`.perf`: ``embench perf`` and ``embench scaling``: the figures of each pass
  (``figures``), their Markdown (``markdown``), the training step, the thread sweep
  (``scaling``) and the GPU runs (``gpu``, ``gpu_train``);
- :mod:`.report`: ``embench report`` and the commands that read or judge its results: the
  measurement (``measure``), Markdown and plots (``render``, ``plots``), the cost model's fit
  (``calibrate``), the family axis, one shape (``at_shape``: check, mine, choose), ``compare``
  and ``benchtable``;
- ``cli`` (the ``embench`` parser) and ``commands`` (what each command does).

The parts import the engine and the core, never each other's modules upward: engine imports
neither perf nor report.
"""
