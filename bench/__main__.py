"""``python -m bench``: run every benchmark, merge into bench/results.json, print a table."""

from __future__ import annotations

from bench import (
    console_bench,
    dev_cluster_startup,
    egress_bench,
    first_token,
    harness_bench,
    install_bench,
    long_session,
    mcp_bench,
    operator_bench,
    policy_bench,
    sandbox_overhead,
)
from bench.results import RESULTS, render_table, save

BENCHMARKS = [
    sandbox_overhead.measure,
    dev_cluster_startup.measure,
    harness_bench.measure,
    long_session.measure,
    install_bench.measure,
    operator_bench.measure,
    first_token.measure,
    policy_bench.measure,
    mcp_bench.measure,
    egress_bench.measure,
    console_bench.measure,
    operator_bench.measure_scale,
]


def main() -> None:
    metrics = [metric for run in BENCHMARKS for metric in run()]
    save(metrics)
    print(render_table(metrics))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
