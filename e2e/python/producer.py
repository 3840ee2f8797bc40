"""Sends calls to a Taskiq stream as a Python producer does (`AsyncKicker(...).kiq()`), waits
for each result, and prints one JSON line per call:
  {"ok": true, "value": ...} or {"ok": false, "exc_type": ..., "message": ...}

Calls are read as a JSON list from stdin: [{"name", "args", "kwargs", "labels"}, ...].
Configured by the environment, as kiq_interop.py.
"""

import asyncio
import json
import sys

from taskiq.kicker import AsyncKicker

from kiq_interop import broker


async def main() -> None:
    calls = json.load(sys.stdin)
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    await broker.startup()
    try:
        tasks = []
        for c in calls:
            kicker = AsyncKicker(task_name=c["name"], broker=broker, labels=c.get("labels", {}))
            tasks.append(await kicker.kiq(*c.get("args", []), **c.get("kwargs", {})))
        for t in tasks:
            try:
                res = await t.wait_result(timeout=timeout)
            except Exception as e:  # a timeout, or a result Python cannot read
                print(json.dumps({"ok": False, "exc_type": type(e).__name__, "message": str(e), "task_id": t.task_id}), flush=True)
                continue
            if res.is_err:
                err = res.error
                print(json.dumps({"ok": False, "exc_type": type(err).__name__, "message": str(err), "task_id": t.task_id}), flush=True)
            else:
                print(json.dumps({"ok": True, "value": res.return_value, "task_id": t.task_id}), flush=True)
    finally:
        await broker.shutdown()


asyncio.run(main())
