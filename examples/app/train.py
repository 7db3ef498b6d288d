"""A stand-in training script: reads its config, 'trains' for a few steps, writes a result."""

import json
import os
import time

with open(os.path.expanduser("~/config/params.json")) as f:
    config = json.load(f)
steps = int(os.environ.get("STEPS", config["steps"]))
for step in range(1, steps + 1):
    time.sleep(0.1)
    print(f"step {step}/{steps} loss={1.0 / step:.3f}", flush=True)
print(f"done with lr={config['lr']}")
