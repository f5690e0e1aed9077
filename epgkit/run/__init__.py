"""The run machinery: configs, run directories, clusters, progress, test-time training, sweeps."""
