"""Attach the tails of every node's log to a failed multi-node test's report."""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and cluster is not None and hasattr(cluster, "log_tails"):
        report.sections.append(("multinode logs (tail)", cluster.log_tails()))
    return report
