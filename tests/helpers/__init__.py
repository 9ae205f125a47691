"""What the tests share: generated clips, model configs, fakes of the pipeline's edges, local servers, and the
scripts some tests run as subprocesses (fault_runner.py, lsl_consumer.py). No test module imports another."""
