"""Cloud Storage for the emulator: gcp-storage-emulator, and a local "FUSE" mirror.

Vertex AI mounts Cloud Storage at ``/gcs/<bucket>`` in every training
container. The emulator has no FUSE, so it keeps a mirror folder per bucket
(``<workdir>/gcs/<bucket>/...``): before a job starts, the objects it reads
(its data channels, earlier checkpoints) are copied in; after each attempt,
what it wrote (model, checkpoints, outputs) is copied back, deletions
included -- what the mount would have done, at coarser moments.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

__all__ = ["StorageEmulator", "split_gs"]


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/path`` -> ("bucket", "path")."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


class StorageEmulator:
    """gcp-storage-emulator in this process (loopback, in memory), plus a client."""

    def __init__(self, *, host: str, buckets: tuple[str, ...], mirror: Path) -> None:
        from gcp_storage_emulator.server import create_server

        # its request log is INFO per call: keep the emulator's output readable
        logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
        self.mirror = mirror
        self._server = create_server(host, 0, in_memory=True, default_bucket=buckets[0])
        self._server.start()
        address = self._server._api._httpd.server_address
        self.url = f"http://{host}:{address[1]}"
        self._client: Any = None
        self._lock = threading.Lock()
        for bucket in buckets[1:]:
            self.client().create_bucket(bucket)

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import importlib

                from cloudnn_gcp._sdk import anonymous_credentials

                storage: Any = importlib.import_module("google.cloud.storage")
                self._client = storage.Client(
                    project="cloudnn-emulator",
                    credentials=anonymous_credentials(),
                    client_options={"api_endpoint": self.url},
                )
            return self._client

    def local(self, uri: str) -> Path:
        """The mirror path of ``gs://bucket/path``."""
        bucket, name = split_gs(uri)
        return self.mirror / bucket / name

    def pull(self, uri: str) -> Path:
        """Copy the objects under ``uri`` (a folder) into the mirror; its path."""
        bucket, prefix = split_gs(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        target = self.local(uri)
        target.mkdir(parents=True, exist_ok=True)
        for blob in self.client().list_blobs(bucket, prefix=prefix):
            rel = blob.name[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            dest = target / rel
            if dest.is_file() and _md5(dest) == blob.md5_hash:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(dest))
        return target

    def push(self, uri: str) -> None:
        """Make the objects under ``uri`` equal the mirror folder (uploads and deletes)."""
        bucket_name, prefix = split_gs(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        source = self.local(uri)
        bucket = self.client().bucket(bucket_name)
        remote = {
            b.name: b for b in self.client().list_blobs(bucket_name, prefix=prefix)
        }
        local: set[str] = set()
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                name = prefix + path.relative_to(source).as_posix()
                local.add(name)
                found = remote.get(name)
                if found is not None and found.md5_hash == _md5(path):
                    continue
                bucket.blob(name).upload_from_filename(str(path))
        for name, blob in remote.items():
            if name not in local and not name.endswith("/"):
                blob.delete()


def _md5(path: Path) -> str:
    import base64

    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()
