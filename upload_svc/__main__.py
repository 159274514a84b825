"""python -m upload_svc: serves UploadService (health, reflection, graceful shutdown).

The methods are not built yet: the generated base servicer answers UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mesh.server import Registrar, run_service
from mesh.settings import Settings
from tiktok.v1 import upload_pb2_grpc


@asynccontextmanager
async def setup(settings: Settings) -> AsyncIterator[Registrar]:
    servicer = upload_pb2_grpc.UploadServiceServicer()
    yield lambda server: upload_pb2_grpc.add_UploadServiceServicer_to_server(servicer, server)


if __name__ == "__main__":
    run_service("upload", setup)
