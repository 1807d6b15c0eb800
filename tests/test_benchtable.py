from bert_embedding_kernels.bench.report.benchtable import medians_by_shape, render


def _bench(group, method, median):
    return {
        "group": group,
        "name": f"test[{method}]",
        "extra_info": {"method": method},
        "stats": {"median": median},
    }


REPORT = {
    "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_version": "3.11"},
    "datetime": "2026-01-01",
    "benchmarks": [
        _bench("b1-s2", "fused", 2e-3),
        _bench("b1-s2", "gather", 6e-3),
        _bench("b1-s2", "copy", 1.5e-3),
        _bench("b9-s9", "onehot", 4.0),
    ],
}


def test_medians_are_grouped_by_shape():
    assert medians_by_shape(REPORT) == {
        "b1-s2": {"fused": 2e-3, "gather": 6e-3, "copy": 1.5e-3},
        "b9-s9": {"onehot": 4.0},
    }


def test_table_shows_ratios_to_fused_and_roofline_fraction():
    lines = render(REPORT).splitlines()
    assert "Test CPU" in lines[0]
    rows = [line for line in lines if line.startswith("| ")][1:]
    # sorted fastest first: copy, fused, gather; gather is 6 ms / 2 ms = 3x fused;
    # fused reaches 1.5 ms / 2 ms = 0.75 of the copy roofline.
    assert rows[0] == "| b1-s2 | copy | 1.5 ms | 0.75 | 0.75 |"
    assert rows[1] == "|  | fused | 2 ms | 1.00 |  |"
    assert rows[2] == "|  | gather | 6 ms | 3.00 |  |"
    # a shape without fused gets no ratio rather than a made-up one
    assert rows[3] == "| b9-s9 | onehot | 4 s | n/a | n/a |"
