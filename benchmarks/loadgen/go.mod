module tessera/benchmarks/loadgen

go 1.24
