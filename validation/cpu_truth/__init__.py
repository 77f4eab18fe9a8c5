"""CPU schedule truth: real DeepSpeed 0.19.8 on gloo ranks, comms logger on (see harness.py)."""
