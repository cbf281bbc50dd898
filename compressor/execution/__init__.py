"""Where a job runs: the device and dtype policy, layer residency (one decoder layer on the device at a time), memory estimates.

Floors: imports `compressor.spec` and `compressor.models`, never a stage; stages and the
pipeline import it.
"""
