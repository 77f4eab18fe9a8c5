"""Does synchronizing a side stream wait for work queued earlier on the default stream?

ZeRO-3 on one rank (partition group of 1) hands out NoGather handles whose wait() calls
``current_stream().synchronize()`` inside the coordinator's all-gather stream context
(deepspeed 0.19.8 runtime/zero/partition_parameters.py:79-85, 108-115;
partitioned_param_coordinator.py:398-405). This times that call on a side stream (empty, with
an event, with a same-device ``.to``) while the default stream runs about 0.18 s of matmuls.

    python validation/microbench/stream_sync.py   (one GPU; prints one JSON line)
"""
import json, time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
def busy(n=40):
    for _ in range(n): a @ a
torch.cuda.synchronize()
t = time.perf_counter(); busy(); torch.cuda.synchronize(); t_busy = time.perf_counter() - t
out = {"busy_s": t_busy, "default_stream": str(torch.cuda.current_stream()), "torch": torch.__version__}
s = torch.cuda.Stream()
for label in ("empty_side_stream", "event_on_side_stream", "to_same_device_on_side_stream"):
    torch.cuda.synchronize()
    busy()
    t = time.perf_counter()
    with torch.cuda.stream(s):
        if label == "event_on_side_stream":
            e = torch.cuda.Event(); e.record()
        if label == "to_same_device_on_side_stream":
            x = a.to(device="cuda:0", non_blocking=True)
        torch.cuda.current_stream().synchronize()
    out[label + "_sync_s"] = time.perf_counter() - t
    torch.cuda.synchronize()
print(json.dumps(out))
