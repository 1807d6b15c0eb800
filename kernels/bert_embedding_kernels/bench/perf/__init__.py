"""``embench perf`` (CPU figures in ``figures``, their Markdown in ``markdown``, the GPU's in
``gpu`` and ``gpu_train``) and ``embench scaling``, all on the shared engine."""
