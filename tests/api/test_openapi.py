"""docs/openapi.yaml: valid OpenAPI 3.1, covering every route the host serves,
and true of the real binary when Schemathesis attacks it from the document.

Builds nothing: it runs target/release/madx-pusher (MADX_PUSHER_BIN overrides
the path) on a free loopback port with a temporary configuration, and stops
it afterwards. MADX_SCHEMATHESIS_EXAMPLES (default 50) bounds the examples per
operation and phase; MADX_SCHEMATHESIS_SEED (default fixed) picks the run.
"""

import base64
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.yaml"
HERE = Path(__file__).resolve().parent

# The test app and operator token; schemathesis.toml reads them from the
# environment.
APP_ID, APP_KEY, APP_SECRET = "shop", "shop-key", "shop-secret-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"


def binary() -> Path:
    path = Path(os.environ.get("MADX_PUSHER_BIN", ROOT / "target" / "release" / "madx-pusher"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --release -p madx-pusher` first")
    return path


@pytest.fixture(scope="module")
def document() -> dict:
    with DOCUMENT.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


CONFIG = f"""
listen = "127.0.0.1:0"

[[apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"
"""


@contextlib.contextmanager
def running(config_dir: Path, config: str):
    """The real binary on 127.0.0.1, port chosen by the kernel; yields its
    base URL and the lines it printed (kept for failure reports)."""
    path = config_dir / "pusher.toml"
    path.write_text(config, encoding="utf-8")
    process = subprocess.Popen(
        [str(binary()), "serve", "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MADX_LOG": "warn"},
        text=True,
    )
    try:
        # The first line names the bound address; the rest is drained so the
        # pipe never fills.
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, f"madx-pusher did not start: {first!r}"
        base = match.group(1)
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
        wait_healthy(base)
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A node with one app and the operator endpoints on."""
    config = f'operator_token = "{OPERATOR_TOKEN}"\n' + CONFIG
    with running(tmp_path_factory.mktemp("server"), config) as started:
        yield started


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "/healthz never answered 200"
        time.sleep(0.1)


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_document_describes_every_route_the_host_serves(document):
    """The routes in host/src/api/mod.rs and host/src/server.rs (which adds
    the WebSocket endpoint), with their methods, are the document's
    operations: none missing, none invented."""
    source = "".join(
        (ROOT / "host" / "src" / path).read_text(encoding="utf-8")
        for path in ("api/mod.rs", "server.rs")
    )
    routes = re.findall(r'\.route\(\s*"([^"]+)",\s*(get|post|put|patch|delete)\(', source)
    assert len(routes) >= 9, f"could not read the routes from the host: {routes}"
    assert ("/v1/ws", "get") in routes, "the WebSocket route was not found"
    served = {(path, method) for path, method in routes}
    described = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert described == served


def test_every_error_response_uses_the_error_body(document):
    """Each 4xx/5xx response of every operation is the JSON error body with a
    code list narrowed to what that status can say."""
    schemas = document["components"]["schemas"]
    responses = document["components"]["responses"]
    codes = set(schemas["ErrorCode"]["enum"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                if "$ref" in response:
                    response = responses[response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                named = schemas[schema["$ref"].rsplit("/", 1)[1]]
                base, narrowed = named["allOf"]
                assert base == {"$ref": "#/components/schemas/Error"}, (path, method, status)
                code = narrowed["properties"]["error"]["properties"]["code"]
                allowed = set(code.get("enum", [code.get("const")]))
                assert allowed and allowed <= codes, (path, method, status, allowed)


def test_schemathesis_finds_no_deviation(server, tmp_path):
    """Every phase (examples, coverage, fuzzing, stateful) with every check:
    no 5xx, and every answer (status, content type, headers, body) is the
    one the document describes."""
    base, log = server
    examples = os.environ.get("MADX_SCHEMATHESIS_EXAMPLES", "50")
    seed = os.environ.get("MADX_SCHEMATHESIS_SEED", "20251202")
    env = {
        **os.environ,
        "MADX_APP_KEY": APP_KEY,
        "MADX_APP_SECRET": APP_SECRET,
        "MADX_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "SCHEMATHESIS_HOOKS": "hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "NO_COLOR": "1",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        str(DOCUMENT),
        "--url",
        base,
        "--max-examples",
        examples,
        "--seed",
        seed,
        # No example database: each run is its seed's, and nothing is
        # written into the repository.
        "--generation-database",
        "none",
    ]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output + "\n--- server output ---\n" + "".join(log)
    assert not any("panicked" in line for line in log), "".join(log)


# Answers the generated requests do not reach (bodies over the size limits,
# the upgrade itself, operator endpoints switched off, routing errors), each
# checked against the document by Schemathesis's own response checks.

CONFORMANCE = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
BASIC = "Basic " + base64.b64encode(f"{APP_KEY}:{APP_SECRET}".encode()).decode()


@pytest.fixture(scope="module")
def described():
    # A default configuration: the checks below are picked per call, and the
    # schemathesis.toml next to this file is for the generated run.
    return schemathesis.openapi.from_path(DOCUMENT, config=SchemathesisConfig())


def answer(described, base, path, method, status, code, **request):
    """Send one request, check the status and error code, then check the
    whole answer against the document."""
    case = described[path][method].Case(**request)
    response = case.call(base_url=base)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
    case.validate_response(response, checks=CONFORMANCE)
    return response


def test_bodies_over_their_limits_are_413_as_described(server, described):
    base, _ = server
    auth = {"Authorization": BASIC}
    over = "x" * (65 * 1024)
    answer(described, base, "/v1/tokens", "POST", 413, "payload_too_large",
           headers=auth, body={"user_id": over})
    message = {"channel": "news", "event": "e", "data": over}
    answer(described, base, "/v1/publish", "POST", 413, "payload_too_large",
           headers=auth, body=message)
    answer(described, base, "/v1/publish/batch", "POST", 413, "payload_too_large",
           headers=auth, body={"messages": [message]})


def test_a_request_without_the_upgrade_is_426_with_the_upgrade_header(server, described):
    base, _ = server
    response = answer(described, base, "/v1/ws", "GET", 426, "upgrade_required",
                      query={"access_id": "K7KWgckL5EU_H6HF-TOTKQ", "otp": "123456"})
    assert response.headers["upgrade"] == ["websocket"]


def test_the_upgrade_is_101_as_described(server):
    """The handshake, raw: the status line and headers the document names."""
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"GET /v1/ws?app={APP_ID}&access_id=K7KWgckL5EU_H6HF-TOTKQ&otp=123456 HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=15) as connection:
        connection.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    assert headers["upgrade"].lower() == "websocket"
    # RFC 6455's example key and its accept value.
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_wrong_operator_token_gets_the_bearer_challenge(server, described):
    base, _ = server
    for path, method in [("/metrics", "GET"), ("/admin/reload", "POST")]:
        response = answer(described, base, path, method, 401, "unauthorized",
                          headers={"Authorization": "Bearer not-the-operator-token"})
        assert response.headers["www-authenticate"] == ['Bearer realm="madx-pusher"']


def test_operator_endpoints_without_a_token_configured_are_404(tmp_path, described):
    with running(tmp_path, CONFIG) as (base, _):
        for path, method in [("/metrics", "GET"), ("/admin/reload", "POST")]:
            answer(described, base, path, method, 404, "not_found",
                   headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})


def test_unknown_paths_and_methods_get_the_error_body(server, document):
    """404 and 405 are not operations of the document; their bodies are its
    Error schema, and a 405 names the allowed methods."""
    base, _ = server
    error = jsonschema_validator(document, "Error")
    response = requests.get(f"{base}/v1/nothing-here", timeout=15)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    error.validate(response.json())
    assert response.json()["error"]["code"] == "not_found"
    for path, method, allowed in [("/v1/tokens", "PUT", "POST"), ("/healthz", "POST", "GET")]:
        response = requests.request(method, f"{base}{path}", timeout=15)
        assert response.status_code == 405
        error.validate(response.json())
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert allowed in response.headers["Allow"].split(",")


def jsonschema_validator(document, name):
    """A validator for one schema of the document, its references resolved."""
    schema = {**document["components"]["schemas"][name], "components": document["components"]}
    return Draft202012Validator(schema)
