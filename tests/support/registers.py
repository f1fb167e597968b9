"""An Open Klant for tests: the Klantinteracties API in memory, served by uvicorn on a loopback port.

Every request is validated against the OpenAPI specification in ../shared/specs/ (openapi-core) before it is
carried out; a request that does not validate is answered 400, as the real server does, and kept in `invalid`,
so a test can assert that kcc-mail never sent one. Beyond the specification it behaves as the specs' README says
Open Klant 2.18 does: uuids assigned by the server, `verstrektDoorPartij` required, Django's e-mail check,
referentienummer unique, no uniqueness on actors, `toegewezenOp` set by the server, `Authorization: Token …`
or 401, paginated lists. It can fail on demand (`fail`): a 500 before or after carrying a request out, an answer
that never comes, or a connection cut halfway through the answer. `OpenZaakServer` is the Documenten API beside
it, with Open Zaak 1.30's large-file upload (bestandsdelen, lock, unlock) as read from its source.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey
from openapi_core import OpenAPI
from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from support.require import SPECS

SPEC = SPECS / "open-klant-2.18-klantinteracties-openapi.yaml"
BASE_PATH = "/klantinteracties/api/v1"
TOKEN = "test-openklant-token-1234"
DRC_SPEC = SPECS / "open-zaak-1.30-documenten-openapi.yaml"
DRC_PATH = "/documenten/api/v1"
CLIENT_ID = "kcc-mail"
SECRET = "test-openzaak-secret-5678"
INFORMATIEOBJECTTYPE = "http://catalogi.test/catalogi/api/v1/informatieobjecttypen/4e2f8a6c-0b4c-4b55-9a3f-1c2d3e4f5a6b"
"""The one published informatieobjecttype the Open Zaak test server knows."""
RSIN = "002220647"

# Django's EmailValidator as observed: a dot-atom local part, a domain with a dot and a top level of 2+ letters.
_EMAIL = re.compile(
    r"^[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+(\.[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+)(?:[A-Za-z0-9-]{2,63}(?<!-))$"
)
_GROUPS = ("actoridentificator", "onderwerpobjectidentificator", "bijlageidentificator", "contactnaam")
"""Filters like actoridentificatorObjectId name a field of one of these groups."""
_READ_ONLY = {"uuid", "url", "toegewezenOp"}
_ALIASES = {
    ("bijlagen", "klantcontact__uuid"): "wasBijlageVanKlantcontact__uuid",
    ("internetaken", "klantcontact__uuid"): "aanleidinggevendKlantcontact__uuid",
}
"""Filters Open Klant names after another field than the one they filter on."""
_SPEC_CACHE: dict[Path, OpenAPI] = {}


def openapi(path: Path = SPEC) -> OpenAPI:
    """The specification, parsed once per test run (it is large), with nullable references read as meant."""
    if path not in _SPEC_CACHE:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        _nullable_references(spec, spec["components"]["schemas"])
        _local_references_only(spec)
        _ignored_header_parameters(spec)
        _SPEC_CACHE[path] = OpenAPI.from_dict(spec, base_uri=path.as_uri())
    return _SPEC_CACHE[path]


def _ignored_header_parameters(spec: dict[str, Any]) -> None:
    """OpenAPI 3.0.3 says a header parameter named Accept, Content-Type or Authorization "SHALL be ignored";
    openapi-core checks it anyway. The Documenten specification declares `Content-Type: application/json` even on
    the multipart PUT of a bestandsdeel, which Open Zaak (and every client) sends as multipart/form-data: the media
    type is checked by the request body's `content` instead, as the standard means."""
    ignored = {"accept", "content-type", "authorization"}
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"] = [p for p in operation["parameters"] if not (
                    p.get("in") == "header" and str(p.get("name", "")).lower() in ignored)]


def _local_references_only(node: Any) -> None:
    """The Documenten specification points at the Catalogi and Zaken specifications on the internet for its
    `expand` answers; a test cannot fetch them, and kcc-mail sends none of those objects, so they accept anything."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if isinstance(value, dict) and str(value.get("$ref", "#")).split("#")[0]:
                node[key] = {}
            else:
                _local_references_only(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, dict) and str(value.get("$ref", "#")).split("#")[0]:
                node[index] = {}
            else:
                _local_references_only(value)


def _nullable_references(node: Any, schemas: dict[str, Any]) -> None:
    """drf-spectacular writes a nullable reference as `allOf: [$ref], nullable: true` without a `type`.

    Read strictly, OpenAPI 3.0.3 ignores `nullable` there and the referenced schema refuses null; Open Klant
    accepts it (and requires `"verstrektDoorPartij": null`). Such a schema becomes "the reference, or null", so
    the validator allows null exactly where the server does and checks everything else as written.
    """
    if isinstance(node, dict):
        all_of = node.get("allOf")
        if node.get("nullable") and "type" not in node and isinstance(all_of, list) and len(all_of) == 1:
            target = schemas.get(str(all_of[0].get("$ref", "")).rpartition("/")[2], {})
            node.pop("allOf")
            node.pop("nullable")
            node["oneOf"] = [all_of[0], {"type": target.get("type", "object"), "nullable": True, "enum": [None]}]
        for value in node.values():
            _nullable_references(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _nullable_references(value, schemas)


@dataclass
class Fault:
    """What the next matching request suffers: `kind` is 500, 500-after, timeout-after or cut-after.

    `resource` is a collection ("bestandsdelen", "enkelvoudiginformatieobjecten") or one of its actions
    ("enkelvoudiginformatieobjecten/unlock", "…/lock"); empty matches every request."""

    kind: str
    method: str = ""
    resource: str = ""
    times: int = 1


@dataclass
class OpenKlantServer:
    """The register's state, for the test to look at and to break."""

    spec: Path = SPEC
    base_path: str = BASE_PATH
    url: str = ""
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    hang_seconds: float = 5.0
    delay_seconds: float = 0.0
    """Every answer waits this long, so a test can kill the exporter while requests are in flight."""
    journal: list[tuple[str, str, str, bytes, list[str]]] | None = None
    """When a list: every carried-out request as (method, path, query, body, the new objects' urls), to replay."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    most_in_flight: int = 0
    """The most requests the server was working on at one moment (the exporter's concurrency, seen from here)."""
    indexes: dict[tuple[str, str], dict[str, dict[str, None]]] = field(default_factory=dict)

    def fail(self, kind: str, method: str = "", resource: str = "", times: int = 1) -> None:
        self.faults.append(Fault(kind, method.upper(), resource, times))

    def all(self, resource: str) -> list[dict[str, Any]]:
        return list(self.objects.get(resource, {}).values())

    def posts(self, resource: str) -> int:
        return sum(1 for method, path in self.requests if method == "POST" and path == resource)

    def _fault(self, method: str, resource: str) -> str:
        for fault in self.faults:
            if fault.times > 0 and fault.method in ("", method) and fault.resource in ("", resource):
                fault.times -= 1
                return fault.kind
        return ""

    # --- the API ----------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = (await receive())["type"]
                await send({"type": f"{message}.complete"})
                if message == "lifespan.shutdown":
                    return
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self._serve(scope, receive, send)
        finally:
            with self.lock:
                self.in_flight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        path = request.url.path.removeprefix(self.base_path).strip("/").split("/")
        method = request.method
        resource = "/".join(path[0:3:2]) if path else ""  # a collection, or one of its actions: "…/unlock"
        with self.lock:
            self.requests.append((method, resource))
            fault = self._fault(method, resource)
        if fault == "500":
            await _respond(send, 500, {"detail": "fault injected before processing"})
            return
        if not self._authorized(request.headers.get("authorization", "")):
            await _respond(send, 401, {"detail": "Authenticatiegegevens zijn niet opgegeven."})
            return
        result = openapi(self.spec).unmarshal_request(StarletteOpenAPIRequest(request, body=body))
        if result.errors:
            reasons = "; ".join(_reason(error) for error in result.errors)
            with self.lock:
                self.invalid.append(f"{method} {request.url.path}: {reasons}")
            await _respond(send, 400, {"title": "Invalid input.", "invalidParams": [
                {"name": "nonFieldErrors", "code": "invalid", "reason": reasons}]})
            return
        data = await _payload(request, body)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        with self.lock:
            status, answer = self._handle(method, path, dict(request.query_params), data)
            if self.journal is not None and status < 400:
                created = created_urls(answer) if method == "POST" else []
                self.journal.append((method, request.url.path, request.url.query, body, created))
        if status < 400 and fault == "500-after":
            await _respond(send, 500, {"detail": "fault injected after processing"})
        elif status < 400 and fault == "timeout-after":
            await asyncio.sleep(self.hang_seconds)
            await _respond(send, status, answer)
        elif status < 400 and fault == "cut-after":
            # a 204 has no body to cut: the cut answer is sent as a 200 whose body breaks off all the same
            await send({"type": "http.response.start", "status": 200 if status == 204 else status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100000")]})
            await send({"type": "http.response.body", "body": b'{"uuid": "', "more_body": True})
            raise ConnectionAbortedError("fault injected: connection cut mid-response")
        else:
            await _respond(send, status, answer)

    def _authorized(self, header: str) -> bool:
        return header == f"Token {TOKEN}"

    def _handle(self, method: str, path: list[str], query: dict[str, str], data: Any) -> tuple[int, Any]:
        resource = path[0]
        store = self.objects.setdefault(resource, {})
        if method == "GET" and len(path) == 1:
            return 200, self._list(resource, store, query)
        if method == "POST" and path == ["maak-klantcontact"]:
            return self._maak_klantcontact(data)
        if method == "POST" and len(path) == 1:
            return self._create(resource, store, data)
        if len(path) == 2 and path[1] in store:
            if method == "GET":
                return 200, store[path[1]]
            if method == "PATCH":  # uniqueness is checked against the others, as Django's UniqueValidator does
                others = {key: record for key, record in store.items() if key != path[1]}
                refused = self._check(resource, data, others, patch=True)
                if refused:
                    return 400, refused
                store[path[1]].update({k: v for k, v in data.items() if k not in _READ_ONLY})
                self.indexes = {key: index for key, index in self.indexes.items() if key[0] != resource}
                return 200, store[path[1]]
        return 404, {"detail": "Niet gevonden."}

    def _create(self, resource: str, store: dict[str, dict[str, Any]], data: dict[str, Any]) -> tuple[int, Any]:
        refused = self._check(resource, data, store, patch=False)
        if refused:
            return 400, refused
        new = str(uuid.uuid4())
        record = {k: v for k, v in data.items() if k not in _READ_ONLY}
        record |= {"uuid": new, "url": f"{self.url}/{resource}/{new}"}
        for value in record.values():  # a foreign key comes back with its url
            if isinstance(value, dict) and set(value) == {"uuid"}:
                value["url"] = f"{self.url}/{_resource_of(value['uuid'], self.objects)}/{value['uuid']}"
        if resource == "internetaken":
            record["toegewezenOp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._on_create(resource, record, store)
        store[new] = record
        self._indexed(resource, new, record)
        return 201, record

    def _maak_klantcontact(self, data: dict[str, Any]) -> tuple[int, Any]:
        """A klantcontact with its betrokkene and onderwerpobject in one atomic call, as Open Klant's
        MaakKlantcontactSerializer does: all three or none, each answered as its own endpoint would."""
        parts = {"klantcontacten": data["klantcontact"], "betrokkenen": data.get("betrokkene"),
                 "onderwerpobjecten": data.get("onderwerpobject")}
        for resource, part in parts.items():
            refused = part is not None and self._check(resource, part, self.objects.setdefault(resource, {}),
                                                       patch=False)
            if refused:
                return 400, refused
        _, klantcontact = self._create("klantcontacten", self.objects["klantcontacten"], parts["klantcontacten"])
        answer: dict[str, Any] = {"klantcontact": klantcontact, "betrokkene": None, "onderwerpobject": None}
        parent = {"uuid": klantcontact["uuid"]}
        if parts["betrokkenen"] is not None:
            _, answer["betrokkene"] = self._create("betrokkenen", self.objects["betrokkenen"],
                                                   {"wasPartij": None, **parts["betrokkenen"],
                                                    "hadKlantcontact": parent})
        if parts["onderwerpobjecten"] is not None:
            _, answer["onderwerpobject"] = self._create("onderwerpobjecten", self.objects["onderwerpobjecten"],
                                                        {"wasKlantcontact": None, **parts["onderwerpobjecten"],
                                                         "klantcontact": dict(parent)})
        return 201, answer

    def _on_create(self, resource: str, record: dict[str, Any], store: dict[str, dict[str, Any]]) -> None:
        """What the server adds to a new object beyond uuid and url."""

    def _check(self, resource: str, data: dict[str, Any], store: dict[str, dict[str, Any]], *, patch: bool
               ) -> dict[str, Any] | None:
        """What the real server refuses beyond the specification."""
        def refuse(name: str, reason: str) -> dict[str, Any]:
            return {"title": "Invalid input.", "invalidParams": [{"name": name, "code": "invalid", "reason": reason}]}

        if resource == "digitaleadressen" and not patch and "verstrektDoorPartij" not in data:
            return refuse("verstrektDoorPartij", "Dit veld is vereist.")
        if resource == "digitaleadressen" and data.get("soortDigitaalAdres") == "email" \
                and not _EMAIL.match(data.get("adres", "")):
            return refuse("adres", "Voer een geldig e-mailadres in.")
        if resource == "klantcontacten" and data.get("referentienummer") and any(
                other.get("referentienummer") == data["referentienummer"] for other in store.values()):
            return refuse("referentienummer", "Er bestaat al een klantcontact met eenzelfde referentienummer.")
        if resource == "klantcontacten" and data.get("verdereActieOndernomen") and data.get("indicatieContactGelukt"):
            return refuse("nonFieldErrors", "verdereActieOndernomen en indicatieContactGelukt kunnen niet samen.")
        for name, value in data.items():
            refs = value if isinstance(value, list) else [value]
            for ref in refs:
                if isinstance(ref, dict) and set(ref) <= {"uuid", "url"} and "uuid" in ref \
                        and _resource_of(ref["uuid"], self.objects) is None:
                    return refuse(name, f"Ongeldige uuid \"{ref['uuid']}\" - object bestaat niet.")
        return None

    def _list(self, resource: str, store: dict[str, dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        page = int(query.pop("page", "1"))
        size = min(int(query.pop("pageSize", "100")), 100)
        query.pop("expand", None)
        names = {k: _ALIASES.get((resource, k), k) for k in query}
        candidates: Any = store.values()
        if query:  # narrowed by an index on the first filter, then every filter checked on what is left
            first = next(iter(query))
            index = self._index(resource, store, names[first])
            wanted = query[first]
            uuids = {**index.get(wanted, {}), **index.get(wanted.lower(), {})}
            candidates = [store[u] for u in uuids if u in store]
        found = [record for record in candidates if all(_matches(record, names[k], v) for k, v in query.items())]
        chunk = found[(page - 1) * size: page * size]
        more = page * size < len(found)
        params = "&".join(f"{k}={v}" for k, v in query.items())
        next_url = f"{self.url}/{resource}?{params}&page={page + 1}&pageSize={size}" if more else None
        return {"count": len(found), "next": next_url, "previous": None, "results": chunk}


    def _index(self, resource: str, store: dict[str, dict[str, Any]], name: str) -> dict[str, dict[str, None]]:
        """Value of filter `name` → the uuids of `resource` with it, in creation order: a lookup among thousands of
        records costs what it costs on the real server (an indexed query), not a scan of every record. Kept up to
        date on create, rebuilt after a PATCH; tests change records in place only in fields no lookup filters on."""
        key = (resource, name)
        if key not in self.indexes:
            index: dict[str, dict[str, None]] = {}
            for record_uuid, record in store.items():
                index.setdefault(_filter_key(record, name), {})[record_uuid] = None
            self.indexes[key] = index
        return self.indexes[key]

    def _indexed(self, resource: str, key: str, record: dict[str, Any]) -> None:
        for (indexed, name), index in self.indexes.items():
            if indexed == resource:
                index.setdefault(_filter_key(record, name), {})[key] = None


def _filter_key(record: dict[str, Any], name: str) -> str:
    try:
        value = _value(record, name)
    except NotImplementedError:
        return "\0"  # no such field: no filter value matches it
    return str(value).lower() if isinstance(value, bool) else str(value)


def created_urls(answer: Any) -> list[str]:
    """The urls of what a POST created: one object, or the three parts of a /maak-klantcontact answer."""
    if not isinstance(answer, dict):
        return []
    if "url" in answer:
        return [str(answer["url"])]
    return [str(part["url"]) for part in answer.values() if isinstance(part, dict) and "url" in part]


def _matches(record: dict[str, Any], name: str, wanted: str) -> bool:
    """A django-filter filter: `a__b` is field b of a; `actoridentificatorObjectId` a field of a group."""
    value = _value(record, name)
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return str(value) == wanted


def _value(record: dict[str, Any], name: str) -> Any:
    value: Any = record
    parts = name.split("__")
    for group in _GROUPS:
        if parts[0].startswith(group) and parts[0] != group:
            rest = parts[0].removeprefix(group)
            parts = [group, rest[0].lower() + rest[1:], *parts[1:]]
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise NotImplementedError(f"the test server cannot filter on {name}")
        value = value[part]
    return value


def _resource_of(object_uuid: str, objects: dict[str, dict[str, dict[str, Any]]]) -> str | None:
    for resource, store in objects.items():
        if object_uuid in store:
            return resource
    return None


def _reason(error: Exception) -> str:
    causes = getattr(error, "schema_errors", None) or getattr(getattr(error, "__cause__", None), "schema_errors", None)
    if causes:
        return "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in causes)
    cause = error.__cause__
    return f"{error}" + (f" ({cause})" if cause else "")


async def _payload(request: Request, body: bytes) -> Any:
    """The request's data: JSON, or a multipart form (a bestandsdeel) with each file part's bytes."""
    if not body:
        return None
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return json.loads(body)
    form = await request.form()
    return {key: (await value.read() if isinstance(value, UploadFile) else value) for key, value in form.items()}


async def _respond(send: Send, status: int, body: Any) -> None:
    if status == 204:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


@dataclass
class Bestandsdeel:
    """One part of a large document's upload, as Open Zaak keeps it until the unlock joins the parts."""

    uuid: str
    document: str
    """The document's key in `objects`."""
    volgnummer: int
    omvang: int
    inhoud: bytes | None = None

    @property
    def voltooid(self) -> bool:
        return self.inhoud is not None and len(self.inhoud) == self.omvang


OPEN_ZAAK_PART_SIZE = 4 * 2**30
"""Open Zaak's DOCUMENTEN_UPLOAD_CHUNK_SIZE by default (its MIN_UPLOAD_SIZE, 4 GiB): one part for most files."""


@dataclass
class OpenZaakServer(OpenKlantServer):
    """The Documenten API of Open Zaak: a ZGW JWT (HS256, the client's secret), an RSIN, a published
    informatieobjecttype, `integriteit.datum`, and an `identificatie` it assigns when none is given.

    Large files as Open Zaak 1.30 takes them: a document posted without `inhoud` and with a `bestandsomvang` is
    created locked, with `bestandsdelen` of `part_size` bytes (the last one the rest) and its `lock` in the
    answer; every bestandsdeel shows the document's current lock, as Open Zaak's serializer does. A part is PUT as
    multipart/form-data with the lock (400 "incorrect-lock-id" otherwise) and exactly `omvang` bytes (400
    "file-size"). The unlock with the lock refuses while parts are missing (400 "incomplete-upload") and joins
    them when all are voltooid. A forced unlock (any unlock by a client with documenten.geforceerd-unlock, set by
    `geforceerd_unlock`) skips those checks and, like Open Zaak, drops the parts of an unfinished upload and its
    bestandsomvang. `lock` checks a document out again; a PATCH needs the lock, makes a new versie, and hands
    out fresh bestandsdelen when the document has no bytes and gets a bestandsomvang.
    """

    spec: Path = DRC_SPEC
    base_path: str = DRC_PATH
    numbered: int = 0
    part_size: int = OPEN_ZAAK_PART_SIZE
    geforceerd_unlock: bool = False
    """Does kcc-mail's client have the scope documenten.geforceerd-unlock (Open Zaak's Autorisaties)?"""
    lock_in_bestandsdelen: bool = True
    """Open Zaak 1.30 shows the lock in each bestandsdeel; False plays a register that keeps it to itself."""
    contents: dict[str, bytes] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    """The lock of each locked document, by its key in `objects`."""
    parts: dict[str, Bestandsdeel] = field(default_factory=dict)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer":
            return False
        try:
            claims = jose_jwt.decode(token, OctKey.import_key(SECRET)).claims
        except Exception:
            return False
        return bool(claims.get("client_id") == CLIENT_ID and abs(time.time() - int(claims.get("iat", 0))) < 300)

    def _handle(self, method: str, path: list[str], query: dict[str, str], data: Any) -> tuple[int, Any]:
        documents = self.objects.setdefault("enkelvoudiginformatieobjecten", {})
        if path[0] == "bestandsdelen" and method == "PUT" and len(path) == 2:
            return self._put_part(path[1], data or {})
        if path[0] != "enkelvoudiginformatieobjecten" or len(path) < 2 or path[1] not in documents:
            return super()._handle(method, path, query, data)
        key = path[1]
        if method == "POST" and path[2:] == ["lock"]:
            return self._lock(key)
        if method == "POST" and path[2:] == ["unlock"]:
            return self._unlock(key, (data or {}).get("lock", ""))
        if method == "PATCH" and len(path) == 2:
            return self._patch(key, data)
        return super()._handle(method, path, query, data)

    def _create(self, resource: str, store: dict[str, dict[str, Any]], data: dict[str, Any]) -> tuple[int, Any]:
        status, answer = super()._create(resource, store, data)
        if resource == "enkelvoudiginformatieobjecten" and status == 201:
            key = answer["url"].rpartition("/")[2]
            return status, {**answer, "lock": self.locks.get(key, "")}  # only the create answer carries it
        return status, answer

    def _check(self, resource: str, data: dict[str, Any], store: dict[str, dict[str, Any]], *, patch: bool
               ) -> dict[str, Any] | None:
        if resource == "enkelvoudiginformatieobjecten" and not patch:
            if data.get("bronorganisatie") != RSIN:
                return _refusal("bronorganisatie", "Onjuist RSIN.")
            if data.get("informatieobjecttype") != INFORMATIEOBJECTTYPE:
                return _refusal("informatieobjecttype", "Het informatieobjecttype is niet gepubliceerd.")
            if data.get("integriteit") and not data["integriteit"].get("datum"):
                return _refusal("integriteit.datum", "Dit veld is vereist.")
            if data.get("identificatie") and any(
                    other.get("identificatie") == data["identificatie"] for other in store.values()):
                return _refusal("identificatie", "Deze identificatie bestaat al voor deze bronorganisatie.")
            inhoud = data.get("inhoud")
            if inhoud is not None and data.get("bestandsomvang") is not None \
                    and len(base64.b64decode(inhoud)) != data["bestandsomvang"]:
                return _refusal("nonFieldErrors", "The size of upload file should match the 'bestandsomvang' field",
                                "file-size")
        return None

    def _on_create(self, resource: str, record: dict[str, Any], store: dict[str, dict[str, Any]]) -> None:
        if resource != "enkelvoudiginformatieobjecten":
            return
        if not record.get("identificatie"):
            self.numbered += 1
            record["identificatie"] = f"DOCUMENT-2026-{self.numbered:010d}"
        key = record.pop("uuid")  # Open Zaak's documents carry their url only
        record["versie"] = 1
        inhoud, omvang = record.get("inhoud"), record.get("bestandsomvang")
        if inhoud is not None or omvang == 0:
            self.contents[record["url"]] = base64.b64decode(inhoud or "")
        elif omvang:
            self.locks[key] = uuid.uuid4().hex
            self._hand_out_parts(key, omvang)
        self._show(key, record)

    def _hand_out_parts(self, key: str, omvang: int) -> None:
        """Open Zaak's bestandsdelen: ceil(omvang / part_size) parts, all of part_size but the last."""
        for volgnummer, start in enumerate(range(0, omvang, self.part_size), start=1):
            part = Bestandsdeel(str(uuid.uuid4()), key, volgnummer, min(self.part_size, omvang - start))
            self.parts[part.uuid] = part

    def _show(self, key: str, record: dict[str, Any] | None = None) -> None:
        """The document as the API shows it: locked or not, its download link, its bestandsdelen with the lock."""
        record = record if record is not None else self.objects["enkelvoudiginformatieobjecten"][key]
        lock = self.locks.get(key, "")
        record["locked"] = bool(lock)
        record["inhoud"] = f"{record['url']}/download" if record["url"] in self.contents else None
        record["bestandsdelen"] = [self._part_answer(p) for p in sorted(
            (p for p in self.parts.values() if p.document == key), key=lambda p: p.volgnummer)]

    def _part_answer(self, part: Bestandsdeel) -> dict[str, Any]:
        lock = self.locks.get(part.document, "") if self.lock_in_bestandsdelen else ""
        return {"url": f"{self.url}/bestandsdelen/{part.uuid}", "volgnummer": part.volgnummer,
                "omvang": part.omvang, "voltooid": part.voltooid, "lock": lock}

    def _put_part(self, part_uuid: str, data: dict[str, Any]) -> tuple[int, Any]:
        part = self.parts.get(part_uuid)
        if part is None:
            return 404, {"detail": "Niet gevonden."}
        if data.get("lock") != self.locks.get(part.document, ""):
            return 400, _refusal("nonFieldErrors", "Lock id is not correct", "incorrect-lock-id")
        inhoud = data.get("inhoud")
        if isinstance(inhoud, bytes):
            if len(inhoud) != part.omvang:
                return 400, _refusal("nonFieldErrors", "Het aangeleverde bestand heeft een afwijkende bestandsgrootte "
                                     f"(volgens het `omvang`-veld).Verwachting: {part.omvang}b, ontvangen: "
                                     f"{len(inhoud)}b", "file-size")
            part.inhoud = inhoud
        self._show(part.document)
        return 200, self._part_answer(part)

    def _lock(self, key: str) -> tuple[int, Any]:
        if self.locks.get(key):
            return 400, _refusal("nonFieldErrors", "The document is already locked", "existing-lock")
        self.locks[key] = uuid.uuid4().hex
        self._show(key)
        return 200, {"lock": self.locks[key]}

    def _unlock(self, key: str, lock: str) -> tuple[int, Any]:
        parts = sorted((p for p in self.parts.values() if p.document == key), key=lambda p: p.volgnummer)
        record = self.objects["enkelvoudiginformatieobjecten"][key]
        if not self.geforceerd_unlock:
            if lock != self.locks.get(key, ""):
                return 400, _refusal("nonFieldErrors", "Lock id is not correct", "incorrect-lock-id")
            if any(p.inhoud is not None for p in parts) and not all(p.voltooid for p in parts):
                return 400, _refusal("nonFieldErrors", "Upload of part files is not complete", "incomplete-upload")
            if parts and all(p.inhoud is None for p in parts) and (record.get("bestandsomvang") or 0) > 0:
                return 400, _refusal("nonFieldErrors", "Either file should be upload or the file size = 0",
                                     "file-size")
        self.locks.pop(key, None)
        if parts and any(p.inhoud is not None for p in parts):
            if all(p.voltooid for p in parts):
                self.contents[record["url"]] = b"".join(p.inhoud or b"" for p in parts)
            else:
                record["bestandsomvang"] = None
            for part in parts:
                del self.parts[part.uuid]
        self._show(key)
        return 204, None

    def _patch(self, key: str, data: dict[str, Any]) -> tuple[int, Any]:
        record = self.objects["enkelvoudiginformatieobjecten"][key]
        if not self.locks.get(key):
            return 400, _refusal("nonFieldErrors", "Unlocked document can't be modified", "unlocked")
        if data.get("lock") != self.locks[key]:
            return 400, _refusal("nonFieldErrors", "Lock id is not correct", "incorrect-lock-id")
        record.update({k: v for k, v in data.items() if k not in (*_READ_ONLY, "lock", "inhoud")})
        record["versie"] += 1
        for part in [p for p in self.parts.values() if p.document == key]:
            del self.parts[part.uuid]
        if record["url"] not in self.contents and record.get("bestandsomvang"):
            self._hand_out_parts(key, record["bestandsomvang"])
        self._show(key)
        return 200, record

    def downloads(self) -> dict[str, bytes]:
        """Each whole document's bytes by its identificatie, as the Documenten API would serve them."""
        return {d["identificatie"]: self.contents[d["url"]] for d in self.all("enkelvoudiginformatieobjecten")
                if d["url"] in self.contents}


def _refusal(name: str, reason: str, code: str = "invalid") -> dict[str, Any]:
    return {"title": "Invalid input.", "invalidParams": [{"name": name, "code": code, "reason": reason}]}


@contextmanager
def open_klant() -> Iterator[OpenKlantServer]:
    """The Open Klant test server on a free loopback port until the block ends."""
    with _serving(OpenKlantServer()) as server:
        yield server


@contextmanager
def open_zaak() -> Iterator[OpenZaakServer]:
    """The Documenten API test server on a free loopback port until the block ends."""
    with _serving(OpenZaakServer()) as server:
        yield server


@contextmanager
def _serving(server: Any) -> Iterator[Any]:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections: no 40 ms stalls
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server.url = f"http://127.0.0.1:{port}{server.base_path}"
    config = uvicorn.Config(server, log_level="critical", lifespan="on")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, name="register", daemon=True)
    openapi(server.spec)
    thread.start()
    deadline = time.monotonic() + 15
    while not runner.started:
        if time.monotonic() > deadline:
            raise AssertionError("the Open Klant test server did not start within 15 s")
        time.sleep(0.02)
    try:
        yield server
    finally:
        runner.should_exit = True
        thread.join(timeout=10)
        sock.close()
