"""The local web page and JSON API over one shared model (edge.serve.service).

POST /v1/predict  multipart: files (one or more PNG/JPEG/DICOM); per file, optional and lined up with files by
                  index: file_sex, file_age, file_birth_date (one value per file, "" for none); for the whole
                  batch: sex, age, which fill only what neither the file's own value nor its DICOM tags give
                  (edge.serve.given); ?format=csv for the CSV that edge-infer writes; ?thumbnails=1 adds a
                  small picture of each image as the model read it
POST /v1/report   multipart: one file (+ the same fields) -> the printable HTML report of edge.clinical.report
GET  /v1/health, GET /v1/model, GET /openapi.json, GET / (the page)

Nothing is written to disk (uploads stay in memory, edge.serve.service) and nothing about a patient is logged:
the access log carries method, path and status only, file names travel in the body.
"""
from __future__ import annotations

import hmac
import io
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser

from edge.output import CsvSink, record
from edge.runtime import parse_sex
from edge.serve.given import Given
from edge.serve.service import Service

MAX_UPLOAD_MB = 64  # one request's body; a hand DICOM is a few tens of MB at most
MAX_FILES = 50
PER_FILE = {"file_sex": "sex", "file_age": "age", "file_birth_date": "birth_date"}  # form field -> Given's

_FORM_SCHEMA = {  # the multipart body, for the OpenAPI description (the endpoint parses the form itself)
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "PNG, JPEG or DICOM radiographs of one hand"},
            "file_sex": {"type": "array", "items": {"type": "string", "enum": ["F", "M", ""]},
                         "description": "each file's patient's sex, one per file in the order of files ('' for "
                                        "none); overrides a DICOM's PatientSex"},
            "file_age": {"type": "array", "items": {"type": "string"},
                         "description": "each file's chronological age (10y3m, 123m, 10.25y; '' for none), one per "
                                        "file; overrides a DICOM's dates"},
            "file_birth_date": {"type": "array", "items": {"type": "string"},
                                "description": "each file's birth date (YYYY-MM-DD; '' for none), one per file: the "
                                               "age on the DICOM's StudyDate, else today"},
            "sex": {"type": "string", "enum": ["F", "M", ""],
                    "description": "for files whose own field and DICOM tags give no sex"},
            "age": {"type": "string", "description": "for files whose own field and DICOM tags give no age"}}}}}}}


def create_app(service: Service, token: str | None = None, max_upload_mb: float = MAX_UPLOAD_MB,
               max_files: int = MAX_FILES, outbox_status=None) -> FastAPI:
    """token: when set, every /v1/ call but health needs `Authorization: Bearer <token>`. outbox_status: the
    DICOM node's queue (edge.serve.outbox.Outbox.status), shown by /v1/health."""
    # No /docs or /redoc: their pages load scripts from a CDN, and this server works offline.
    app = FastAPI(title="boneage-edge", version=service.model_info()["version"] or "0",
                  description="Bone age and sex from hand radiographs. Research use only.",
                  docs_url=None, redoc_url=None)
    limit = int(max_upload_mb * 1024 * 1024)

    @app.exception_handler(ValueError)
    def bad_value(request: Request, e: ValueError):  # a bad form value (age, sex): the user's to fix
        return JSONResponse({"detail": str(e)}, status_code=422)

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong access token (Authorization: Bearer <token>)")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (resources.files("edge.serve") / "page.html").read_text()

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok", **({"dicom_outbox": outbox_status()} if outbox_status else {})}

    @app.get("/v1/model", dependencies=[Depends(authorised)])
    def model() -> dict:
        return service.model_info()

    @app.post("/v1/predict", dependencies=[Depends(authorised)], openapi_extra=_FORM_SCHEMA,
              responses={200: {"content": {"text/csv": {}}}})
    async def predict(request: Request, format: str = "json", thumbnails: bool = False):
        if format not in ("json", "csv"):
            raise HTTPException(422, "format must be json or csv")
        uploads, sex, age, per_file = await _read_form(request, limit, max_files)
        pictures = thumbnails and format == "json"  # each from the image the estimate decoded (no second decode)
        answer = await run_in_threadpool(service.predict, uploads, sex, age, per_file, pictures)
        results, pictures = answer if pictures else (answer, None)
        records = [record(r, service.output_info) for r in results]
        if format == "csv":
            return Response(csv_text(records), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="bone-age.csv"'})
        if pictures is not None:  # beside the records, not in them: a record is what edge-infer writes
            return {"results": records, "thumbnails": pictures}
        return {"results": records}

    @app.post("/v1/report", dependencies=[Depends(authorised)], openapi_extra=_FORM_SCHEMA,
              response_class=HTMLResponse)
    async def report(request: Request):
        uploads, sex, age, per_file = await _read_form(request, limit, 1)
        html = await run_in_threadpool(service.report, uploads[0], sex, age, per_file[0])
        return HTMLResponse(html)

    return app


async def _read_form(request: Request, limit: int, max_files: int):
    """The multipart body, capped at `limit` bytes and held in memory -> ([(name, bytes)], sex, age,
    [Given per file])."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send the files as multipart/form-data")
    if int(request.headers.get("content-length") or 0) > limit:
        raise HTTPException(413, f"upload larger than {limit // 2**20} MB")

    async def capped():
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise HTTPException(413, f"upload larger than {limit // 2**20} MB")
            yield chunk

    parser = MultiPartParser(request.headers, capped(), max_files=max_files,
                             max_fields=10 + len(PER_FILE) * max_files)
    parser.spool_max_size = limit + 1  # the body is capped above, so a file never spills to a temporary file
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise HTTPException(400, str(e)) from None
    files = [f for f in form.getlist("files") if not isinstance(f, str)]
    if not files:
        raise HTTPException(400, "no files: send one or more images in the form field 'files'")
    uploads = [(f.filename, await f.read()) for f in files]
    await form.close()
    try:
        sex = parse_sex(form.get("sex"))
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    return uploads, sex or None, (form.get("age") or "").strip() or None, per_file_values(form, len(uploads))


def per_file_values(form, n: int) -> list[Given]:
    """file_sex / file_age / file_birth_date -> one Given per file. Each field is absent or has exactly one value
    per file, in the order of `files`: values that do not line up would give one child another's age."""
    columns = {}
    for field, attr in PER_FILE.items():
        values = [v if isinstance(v, str) else "" for v in form.getlist(field)]
        if values and len(values) != n:
            raise HTTPException(400, f"{field}: {len(values)} value(s) for {n} file(s); give one per file, in the "
                                     "order of files ('' for none)")
        columns[attr] = values or [""] * n
    return [Given(**{attr: columns[attr][k].strip() for attr in columns}) for k in range(n)]


def csv_text(records: list[dict]) -> str:
    """The CSV edge-infer writes (edge.output), for the same records."""
    out = io.StringIO()
    sink = CsvSink("-", out)
    for rec in records:
        sink.write(rec)
    return out.getvalue()
