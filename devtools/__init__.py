"""Development tooling, apart from the product: real server processes on loopback (`procs`),
a whole local cluster (`local_cluster`, behind `make cluster`) and the failover drill
(`drill`, behind `make drill`). The tests and benchmarks build their clusters here too.

Nothing in `orchestrator/` or `worker/` imports this package; it is not part of the wheel.
"""
