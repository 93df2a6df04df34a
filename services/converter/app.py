"""The converter process: consumes jobs, runs FFmpeg; HTTP only for health and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.converter.importer import Importer, consume_imports
from services.converter.retention import Requeuer, RetentionPolicy, RetentionSweeper
from services.converter.service import Converter
from services.converter.worker import ConverterWorker
from shared.blobstore import open_blob_store
from shared.ffmpeg_path import ffmpeg_executable
from shared.http import install_error_handlers, install_operations
from shared.jobstore import JobStore
from shared.media import MediaPool
from shared.media.fit import Limits
from shared.messaging import EventPublisher, connect
from shared.mongo import mongo_client
from shared.outbound import Guard
from shared.security import install_security
from shared.settings import Settings
from shared.topology import Topology

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = settings.network_timeout
        mongo = mongo_client(settings.require_mongo_url(), timeout)
        amqp = await connect(settings.amqp_url, "converter", timeout)
        libav = MediaPool()
        try:
            db = mongo[settings.mongo_db]
            jobs = JobStore(db)
            topology = Topology(settings.amqp_prefix)
            converter = Converter(
                jobs=jobs,
                blobs=open_blob_store(settings, db),
                publisher=await EventPublisher.open(amqp, topology, timeout),
                work_dir=(settings.var_dir / "tmp" / "converter").resolve(),
                libav=libav,
                ffmpeg=ffmpeg_executable(settings.ffmpeg_path),
                timeout_base=settings.ffmpeg_timeout_base,
                timeout_factor=settings.ffmpeg_timeout_factor,
                retention=RetentionPolicy.from_settings(settings),
                limits=Limits(max_source_seconds=settings.max_source_seconds),
                min_free_bytes=settings.min_free_bytes,
            )
            await asyncio.to_thread(converter.remove_stale_temp)
            await asyncio.to_thread(libav.warm, settings.converter_concurrency)
            sweeper = RetentionSweeper(jobs, converter.blobs, converter.retention, converter.fail)
            worker = ConverterWorker(
                amqp,
                topology,
                converter,
                settings.converter_concurrency,
                sweeper=sweeper,
                sweep_interval=settings.retention_sweep_interval,
                requeuer=Requeuer(jobs, converter.publisher, settings.requeue_after_seconds),
            )
            await worker.start()
            importer = await consume_imports(
                amqp,
                topology,
                Importer(
                    jobs,
                    converter.blobs,
                    converter.publisher,
                    Guard.from_settings(settings.outbound_allow_nets, timeout),
                    max_bytes=settings.max_upload_bytes,
                    deadline=settings.upload_deadline_seconds,
                ),
            )
            app.state.converter = converter
            app.state.jobs = jobs
            app.state.amqp = amqp
            yield
            await importer.stop()
            await worker.stop(settings.converter_shutdown_grace)
        finally:
            await amqp.close()
            await mongo.close()
            await asyncio.to_thread(libav.close)

    app = FastAPI(title="video2mp3 converter", lifespan=lifespan, openapi_url=None)
    install_error_handlers(app)

    async def mongo_ready() -> None:
        await app.state.jobs.ping()

    async def broker_ready() -> None:
        if app.state.amqp.is_closed:
            raise ConnectionError("AMQP connection closed")

    async def ffmpeg_ready() -> None:
        proc = await asyncio.create_subprocess_exec(
            app.state.converter.ffmpeg,
            "-version",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await asyncio.wait_for(proc.wait(), 10) != 0:
            raise RuntimeError("ffmpeg does not run")

    install_operations(
        app,
        {"mongodb": mongo_ready, "rabbitmq": broker_ready, "ffmpeg": ffmpeg_ready},
        service="converter",
    )
    install_security(app)
    return app
