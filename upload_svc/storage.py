"""The bucket upload_svc owns, and the few object operations several modules need. Everything
here is blocking (boto3): call it in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Storage:
    """The bucket and the two S3 clients: one for our own calls, one that signs public URLs."""

    client: Any
    presigner: Any
    bucket: str
    media_base_url: str  # CDN_BASE_URL: where clients GET objects

    def url(self, key: str) -> str:
        return f"{self.media_base_url.rstrip('/')}/{key}"

    def delete_keys(self, keys: list[str]) -> None:
        """Deletes the objects (missing ones are fine), 1,000 per request."""
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )

    def keys_under(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def delete_prefix(self, prefix: str) -> None:
        self.delete_keys(self.keys_under(prefix))
