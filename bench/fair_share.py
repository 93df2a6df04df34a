"""Fair share: how long one account's single job waits behind another account's backlog.

    uv run python bench/fair_share.py [--backlog 40] [--seconds 30]

For each layout (one converter with two slots, two converters with one slot each), user A
queues `--backlog` jobs of a `--seconds` H.264/AAC clip while the converters are stopped, the
converters start, and once A's first job runs user B uploads one job of the same clip. Measured
from MongoDB: B's wait (its job's creation to its start), the median run time of A's jobs, and
how many of A's jobs started between B's upload and B's start. The target of issue 21: B starts
within one job per converter slot, i.e. no more of A's jobs start before it than there are slots
(the verdict). B's wait is then at most one A job's run time plus the time a converter takes to
move A's messages behind B's (a confirmed publish each, ~50 ms on a loaded 2-core machine).
JSON in bench/results/fair_share.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    BenchStack,
    bench_stack,
    dependencies,
    h264_aac,
    login,
    table,
    upload,
    verdict,
    wait_job,
    write_results,
)

LAYOUTS = {"1 converter x 2 slots": (1, 2), "2 converters x 1 slot": (2, 1)}


def _moment(value: Any) -> datetime:
    # nx-27017 hands back a datetime set by an update as text.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def job_times(bench: BenchStack) -> list[dict[str, Any]]:
    from shared.jobs import JOBS_COLLECTION
    from shared.mongo import mongo_client

    client = mongo_client(bench.deps.mongo_url, timeout=30)
    try:
        fields = {"user_id": 1, "created_at": 1, "started_at": 1, "updated_at": 1, "status": 1}
        docs = await client[bench.mongo_db][JOBS_COLLECTION].find({}, fields).to_list()
    finally:
        await client.close()
    for doc in docs:
        for key in ("created_at", "started_at", "updated_at"):
            if doc.get(key) is not None:
                doc[key] = _moment(doc[key])
    return docs


async def run_layout(
    name: str, converters: int, slots: int, backlog: int, clip: Path
) -> dict[str, Any]:
    with dependencies() as deps:
        async with bench_stack(
            deps, "file", CONVERTER_CONCURRENCY=str(slots), USER_MAX_ACTIVE_JOBS="0"
        ) as bench:
            stack = bench.stack
            stack.stop("converter")
            async with httpx.AsyncClient(base_url=bench.url, timeout=120) as client:
                a, b = await login(client), await login(client)
                for _ in range(backlog):
                    await upload(client, a, clip)
                names = ["converter"] + [f"converter{i}" for i in range(2, converters + 1)]
                for converter in names:
                    stack.launch(converter, "converter")
                headers = {"authorization": f"Bearer {a}"}
                while True:
                    page = (await client.get("/v1/jobs?limit=100", headers=headers)).json()
                    if any(j["status"] != "queued" for j in page["items"]):
                        break
                    await asyncio.sleep(0.05)
                b_id, _, _ = await upload(client, b, clip)
                submitted = time.monotonic()
                await wait_job(client, b, b_id)
                b_total = time.monotonic() - submitted
            docs = await job_times(bench)
    b_doc = next(d for d in docs if d["_id"] == b_id)
    a_docs = [d for d in docs if d["user_id"] != b_doc["user_id"]]
    runs = [
        (d["updated_at"] - d["started_at"]).total_seconds()
        for d in a_docs
        if d["status"] == "completed" and d.get("started_at")
    ]
    job_seconds = statistics.median(runs) if runs else float("nan")
    wait = (b_doc["started_at"] - b_doc["created_at"]).total_seconds()
    waiting_then = [
        d for d in a_docs if not d.get("started_at") or d["started_at"] > b_doc["created_at"]
    ]
    overtook = sum(
        1 for d in waiting_then if d.get("started_at") and d["started_at"] < b_doc["started_at"]
    )
    return {
        "layout": name,
        "converters": converters,
        "slots_each": slots,
        "a_queued_when_b_came": len(waiting_then),
        "a_started_before_b": overtook,
        "b_wait_s": round(wait, 3),
        "b_until_done_s": round(b_total, 3),
        "a_job_median_s": round(job_seconds, 3),
        "within_one_job_per_slot": overtook <= converters * slots,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    clip = h264_aac(args.seconds)
    results = [
        await run_layout(name, converters, slots, args.backlog, clip)
        for name, (converters, slots) in LAYOUTS.items()
    ]
    print(
        table(
            ["layout", "A queued", "A before B", "B wait s", "A job s", "verdict"],
            [
                [
                    r["layout"],
                    r["a_queued_when_b_came"],
                    r["a_started_before_b"],
                    r["b_wait_s"],
                    r["a_job_median_s"],
                    verdict(r["within_one_job_per_slot"]),
                ]
                for r in results
            ],
        )
    )
    write_results(
        "fair_share", {"backlog": args.backlog, "clip_seconds": args.seconds, "runs": results}
    )


if __name__ == "__main__":
    asyncio.run(main())
