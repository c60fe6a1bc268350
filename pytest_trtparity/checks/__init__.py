"""The gate's checks, one module each (contract, build, functional, closed loop, latency, memory,
throughput, baseline, profiles, invariance), and the shared chunk loop they run on."""
