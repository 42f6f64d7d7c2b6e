"""Benchmarks that print numbers: model latency and throughput (`mltagger bench`), the service under
load (`mltagger load-test`) and the duplicate screen at store scale (`mltagger dedup-eval`).

Above serving because they drive the real service and store; nothing imports them but the CLI.
"""
