def pytest_addoption(parser):
    parser.addoption(
        "--bench-full",
        action="store_true",
        help="benchmark the full sweeps (kernels.cases.VOCAB_SIZES / SEQ_LENS at SWEEP_BASE) "
        "instead of the CI sizes",
    )
