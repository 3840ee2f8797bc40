"""The Python side of kiq's Taskiq interop tests: a taskiq-redis app configured from the
environment, as a team following a Taskiq standard would write it.

  KIQ_TEST_REDIS_URL   the private Redis of the test, in kiq's URL forms (one server,
                       redis+cluster://..., redis+sentinel://.../master)
  KIQ_TEST_STREAM      the stream (RedisStreamBroker's queue_name), default "taskiq"
  KIQ_TEST_RESULTS     "pickle" (Taskiq's default) or "json"
  KIQ_TEST_IDLE_MS     Taskiq's reclaim min-idle (idle_timeout), default 600000
  KIQ_TEST_PREFIX      the result backend's prefix_str, if any

Run a worker with `taskiq worker kiq_interop:broker`; `producer.py` sends calls.
"""

import os

import redis.asyncio as aioredis
from taskiq.serializers import JSONSerializer
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from taskiq_redis import (
    RedisAsyncClusterResultBackend,
    RedisAsyncResultBackend,
    RedisAsyncSentinelResultBackend,
    RedisStreamBroker,
    RedisStreamClusterBroker,
    RedisStreamSentinelBroker,
)

URL = os.environ.get("KIQ_TEST_REDIS_URL", "redis://127.0.0.1:6379")
STREAM = os.environ.get("KIQ_TEST_STREAM", "taskiq")
RESULTS = os.environ.get("KIQ_TEST_RESULTS", "pickle")
IDLE_MS = int(os.environ.get("KIQ_TEST_IDLE_MS", "600000"))
PREFIX = os.environ.get("KIQ_TEST_PREFIX") or None

backend_options = {"prefix_str": PREFIX}
if RESULTS == "json":
    backend_options["serializer"] = JSONSerializer()

# kiq's URL forms name the topology: redis+cluster://h:p,h:p and redis+sentinel://h:p,h:p/master
# map to taskiq-redis's cluster and Sentinel classes.
if URL.startswith("redis+cluster://"):
    SEED = "redis://" + URL.removeprefix("redis+cluster://").split(",")[0]
    backend = RedisAsyncClusterResultBackend(SEED, **backend_options)
    # taskiq-redis's cluster and Sentinel stream brokers block 10 s per XREADGROUP by default,
    # past redis-py's read timeout: their workers die with "Timeout reading" every few seconds,
    # leaving what they read pending (these classes never reclaim). Block as the plain one does.
    broker = RedisStreamClusterBroker(SEED, queue_name=STREAM, xread_block=2000)

    def connect():
        return RedisCluster.from_url(SEED)

elif URL.startswith("redis+sentinel://"):
    hosts, MASTER = URL.removeprefix("redis+sentinel://").split("/", 1)
    SENTINELS = [(h.split(":")[0], int(h.split(":")[1])) for h in hosts.split(",")]
    backend = RedisAsyncSentinelResultBackend(SENTINELS, MASTER, **backend_options)
    broker = RedisStreamSentinelBroker(SENTINELS, MASTER, queue_name=STREAM, xread_block=2000)

    def connect():
        return Sentinel(SENTINELS).master_for(MASTER)

else:
    backend = RedisAsyncResultBackend(URL, **backend_options)
    broker = RedisStreamBroker(URL, queue_name=STREAM, idle_timeout=IDLE_MS)

    def connect():
        return aioredis.from_url(URL)


broker = broker.with_result_backend(backend)


async def count_run(task: str) -> None:
    """Counts a Python run of `task`, so a test can check each message ran once."""
    r = connect()
    try:
        await r.incr(f"kiq-test:python-ran:{task}")
    finally:
        await r.aclose()


@broker.task(task_name="py.mul")
async def mul(a: int, b: int) -> int:
    await count_run("py.mul")
    return a * b


@broker.task(task_name="py.fail")
async def fail(message: str) -> None:
    raise ValueError(message)


@broker.task(task_name="py.describe")
async def describe(name: str, size: int = 1, tags: list | None = None) -> dict:
    return {"name": name, "size": size, "tags": tags or []}


@broker.task(task_name="interop.add")
async def add(a: int, b: int) -> int:
    """The Python version of a task being moved to kiq: both serve it during the move. Counts
    its runs so a test can see that both sides took some."""
    await count_run("interop.add")
    return a + b
