"""The bare FastAPI endpoint the API benchmark compares GET /v1/jobs/{id} with: same framework,
same uvicorn settings (uvloop, httptools), a job-shaped JSON body, no auth and no database."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

JOB: dict[str, Any] = {
    "id": "0" * 32,
    "status": "completed",
    "progress": 100,
    "filename": "holiday.mp4",
    "created_at": "2024-01-01T00:00:00+00:00",
    "updated_at": "2024-01-01T00:00:10+00:00",
    "options": {"format": "mp3", "quality": 2},
    "source": {
        "size": 6459949,
        "duration": 60.0,
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "audio_codec": "aac",
    },
    "output": {
        "size": 1000000,
        "duration": 60.0,
        "bitrate": 130000,
        "download_url": "/v1/jobs/0/download",
    },
    "error": None,
}

app = FastAPI()


@app.get("/v1/jobs/{job_id}")
async def get_job(job_id: str) -> dict[str, Any]:
    return {**JOB, "id": job_id}
