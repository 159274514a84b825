"""The bucket upload_svc owns, and every object operation on it: the one place that speaks
boto3. Everything here is blocking (boto3): call it in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import botocore.exceptions

from upload_svc import rules

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MISSING_CODES = ("404", "NoSuchKey", "NotFound")
PRECONDITION_CODES = ("PreconditionFailed", "412")


@dataclass(frozen=True)
class ObjectHead:
    size: int
    etag: str


@dataclass(frozen=True)
class Storage:
    """The bucket and the two S3 clients: one for our own calls, one that signs public URLs."""

    client: S3Client
    presigner: S3Client
    bucket: str
    media_base_url: str  # CDN_BASE_URL: where clients GET objects

    def url(self, key: str) -> str:
        return f"{self.media_base_url.rstrip('/')}/{key}"

    def presigned_put(self, key: str, content_type: str, seconds: int) -> str:
        """A URL that PUTs ``key`` with exactly this Content-Type and the immutable
        Cache-Control (both are signed: the client must send them)."""
        return str(
            self.presigner.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ContentType": content_type,
                    "CacheControl": rules.IMMUTABLE_CACHE_CONTROL,
                },
                ExpiresIn=seconds,
            )
        )

    def head(self, key: str) -> ObjectHead | None:
        """The object's size and version (ETag); None when there is none."""
        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if _code(e) in MISSING_CODES:
                return None
            raise
        return ObjectHead(int(reply["ContentLength"]), str(reply["ETag"]))

    def copy_if_match(self, source: str, target: str, etag: str) -> bool:
        """Copies exactly version ``etag`` of ``source``; False when the object changed."""
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                CopySourceIfMatch=etag,
                MetadataDirective="COPY",
            )
        except botocore.exceptions.ClientError as e:
            if _code(e) in PRECONDITION_CODES:
                return False
            raise
        return True

    def put_immutable(self, key: str, body: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            CacheControl=rules.IMMUTABLE_CACHE_CONTROL,
        )

    def download(self, key: str, path: str) -> bool:
        """The object into a local file; False when there is no such object."""
        try:
            self.client.download_file(self.bucket, key, path)
        except botocore.exceptions.ClientError as e:
            if _code(e) in MISSING_CODES:
                return False
            raise
        return True

    def upload_immutable(self, key: str, path: str, content_type: str) -> None:
        """A local file as an object (multipart when large)."""
        self.client.upload_file(
            path,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type, "CacheControl": rules.IMMUTABLE_CACHE_CONTROL},
        )

    def abort_multipart_older_than(self, cutoff: datetime) -> int:
        """Aborts the multipart uploads begun before ``cutoff``; returns how many."""
        reply = self.client.list_multipart_uploads(Bucket=self.bucket)
        stale = [u for u in reply.get("Uploads", []) if u["Initiated"] < cutoff]
        for u in stale:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
            )
        return len(stale)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

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

    def multipart(self, key: str, content_type: str) -> Multipart:
        reply = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            ContentType=content_type,
            CacheControl=rules.IMMUTABLE_CACHE_CONTROL,
        )
        return Multipart(self, key, str(reply["UploadId"]))


@dataclass
class Multipart:
    """One multipart upload: parts in order, then complete (or abort)."""

    storage: Storage
    key: str
    upload_id: str

    def __post_init__(self) -> None:
        self.parts: list[CompletedPartTypeDef] = []

    def upload_part(self, body: bytes) -> None:
        number = len(self.parts) + 1
        reply = self.storage.client.upload_part(
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        self.parts.append({"PartNumber": number, "ETag": reply["ETag"]})

    def complete(self) -> None:
        self.storage.client.complete_multipart_upload(
            Bucket=self.storage.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        self.storage.client.abort_multipart_upload(
            Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id
        )


def _code(error: botocore.exceptions.ClientError) -> str | None:
    code = error.response.get("Error", {}).get("Code")
    return str(code) if code is not None else None
