"""Ranged reads on ``s3://`` and ``gs://`` held to the version of the object that was opened.

Each read is one GET made conditional on the pinned version, so a replaced object is
refused by the store itself, in the same round trip as the data:

- S3 (s3fs): ``GetObject`` with ``IfMatch=<pinned ETag>``; S3 answers ``412
  PreconditionFailed`` once the object was replaced. The answer's ``ETag`` is compared
  too (an S3-compatible store that ignores ``If-Match`` still names the version it sent).
  ``VersionId`` is not used: reading the old version of a versioned bucket would hide the
  change from this process while every new process refuses it.
- GCS (gcsfs): the media download with ``ifGenerationMatch=<pinned generation>``; GCS
  answers 412 once the live generation differs. The answer's ``x-goog-generation`` is
  compared where it is sent.

Both hand back the answer's ``Content-Range`` so the caller checks the range and the
object's total size (:meth:`xnwb.remote.RemoteObject._check_content_range`). The retries
of s3fs and gcsfs apply as for their own ``_cat_file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xnwb.exceptions import ChunkReadError, SourceChangedError

__all__ = ["Answer", "gcs_range", "s3_range"]


@dataclass(frozen=True)
class Answer:
    """The body of one ranged GET and its ``Content-Range`` (``None`` when not sent)."""

    body: bytes
    content_range: str | None


def _replaced(url: str, why: str) -> SourceChangedError:
    return SourceChangedError(
        f"{url!r} changed since it was opened ({why}): its data no longer sit where the "
        "index says; reopen it to read the new version"
    )


def _precondition_failed(err: BaseException) -> bool:
    """Whether ``err`` (or what it was translated from) is S3's 412 PreconditionFailed.

    s3fs turns botocore's ``ClientError`` into an ``OSError`` and keeps the original as
    ``__cause__``; its ``response`` says what S3 answered.
    """
    seen: BaseException | None = err
    for _ in range(8):  # a short chain; never loop on a cycle
        if seen is None:
            return False
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code == "PreconditionFailed" or status == 412:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


async def s3_range(fs: Any, url: str, start: int, end: int, etag: str | None) -> Answer:
    """Bytes ``[start, end)`` of ``url`` through s3fs, refused unless its ETag is ``etag``.

    Parameters
    ----------
    fs : s3fs.S3FileSystem
        An asynchronous instance.
    url : str
        ``s3://bucket/key`` (a ``?versionId=`` in it is honoured).
    start, end : int
        The byte range, ``end`` exclusive, ``end > start``.
    etag : str or None
        The pinned ETag; ``None`` reads unconditionally.

    Raises
    ------
    SourceChangedError
        S3 answered 412, or the answer carries another ETag.
    ChunkReadError
        The store answered without ``Content-Range`` and with another length (it ignored
        the range): nothing of that body is read.
    """
    bucket, key, version = fs.split_path(url)
    request: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
    if version:
        request["VersionId"] = version
    if etag:
        request["IfMatch"] = etag

    async def call_and_read() -> Answer:
        resp = await fs._call_s3("get_object", **request)
        body = resp["Body"]
        try:
            content_range = resp.get("ContentRange")
            length = resp.get("ContentLength")
            if content_range is None and length is not None and int(length) != end - start:
                raise ChunkReadError(
                    f"the store ignores Range: {length} bytes without Content-Range for "
                    f"'Range: bytes={start}-{end - 1}'"
                )
            sent = resp.get("ETag")
            if etag and sent and sent != etag:
                raise _replaced(url, f"ETag {etag} -> {sent}, from the answer to a ranged GET")
            return Answer(bytes(await body.read()), content_range)
        finally:
            body.close()

    try:
        # As s3fs's own _cat_file: the call and the body read retried together.
        from s3fs.core import _error_wrapper
    except ImportError:  # pragma: no cover - a future s3fs without it: one attempt here
        reader = call_and_read()
    else:
        reader = _error_wrapper(call_and_read, retries=fs.retries)
    try:
        return await reader
    except OSError as err:
        if isinstance(err, ChunkReadError) or not _precondition_failed(err):
            raise
        raise _replaced(url, f"S3 answered 412 PreconditionFailed to IfMatch: {etag}") from err


async def gcs_range(fs: Any, url: str, start: int, end: int, generation: str | None) -> Answer:
    """Bytes ``[start, end)`` of ``url`` through gcsfs, refused unless it is ``generation``.

    Parameters
    ----------
    fs : gcsfs.GCSFileSystem
        An asynchronous instance.
    url : str
        ``gs://bucket/object``.
    start, end : int
        The byte range, ``end`` exclusive, ``end > start``.
    generation : str or None
        The pinned generation; ``None`` reads unconditionally.

    Raises
    ------
    SourceChangedError
        GCS answered 412 (gcsfs raises ``FileExistsError`` for it), or the answer's
        ``x-goog-generation`` is another one.
    """
    location = fs.url(url)  # the media download; it already holds "?alt=media"
    if generation:
        location += f"&ifGenerationMatch={generation}"
    try:
        headers, body = await fs._call(
            "GET", location, headers={"Range": f"bytes={start}-{end - 1}"}
        )
    except FileExistsError as err:
        raise _replaced(url, f"GCS answered 412 to ifGenerationMatch={generation}") from err
    sent = headers.get("x-goog-generation")
    if generation and sent and sent != generation:
        raise _replaced(url, f"generation {generation} -> {sent}, from x-goog-generation")
    return Answer(bytes(body), headers.get("Content-Range"))
