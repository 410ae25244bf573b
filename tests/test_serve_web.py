"""edge-serve's web page and JSON API: the API in process (FastAPI's test client), the real server as a
subprocess (access log, token on a non-loopback address) and the page in a real headless Chromium."""
from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edge.runtime

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import REPO, repo_env  # noqa: E402
from dicom_fixtures import radiograph_dataset, write  # noqa: E402
from edge.output import record  # noqa: E402
from edge.runtime import default_bundle_path  # noqa: E402
from edge.serve.service import Service  # noqa: E402
from edge.serve.web import create_app  # noqa: E402

SAMPLES = sorted((default_bundle_path() / "samples").glob("*.png"))
TOKEN = "s3cret-token"
# A file name no log line may carry (patients' names end up in file names).
SECRET_NAME = "Doe_Jane_2014-01-02_hand.png"


@pytest.fixture(scope="module")
def service() -> Service:
    return Service.load()


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service, max_upload_mb=2, max_files=4))


def _files(*paths, name=None):
    return [("files", (name or p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


# What BoneAgeModel.predict gives (the clinical context is added to it after the network).
RUNTIME = ("bone_age_months", "p_male", "sex", "backend", "precision", "given_sex", "warning", "model",
           "model_version")


def _expected(service, path, **kwargs) -> dict:
    """BoneAgeModel.predict on the file, rendered as edge-infer renders it (edge.output.record)."""
    return record(service.model.predict(path, **kwargs), service.output_info)


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()  # every field of the record, whatever the runtime adds
    assert {k: got[k] for k in RUNTIME} == {k: want[k] for k in RUNTIME}


def test_predict_equals_the_runtime(client, service):
    r = client.post("/v1/predict", files=_files(*SAMPLES[:2]))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for got, path in zip(results, SAMPLES[:2]):
        assert got["file"] == path.name
        _same(got, _expected(service, path))
    clinical = service.model.bundle.meta.get("clinical")
    if clinical and "intervals" in clinical:  # the clinical context is there too
        assert results[0]["interval_low_months"] < results[0]["bone_age_months"] < results[0]["interval_high_months"]


def test_sex_given_and_a_bad_file_in_the_batch(client, service):
    files = _files(SAMPLES[0]) + [("files", ("broken.png", b"not an image", "image/png"))]
    r = client.post("/v1/predict", files=files, data={"sex": "F"})
    assert r.status_code == 200
    good, bad = r.json()["results"]
    _same(good, _expected(service, SAMPLES[0], sex="F"))
    assert good["given_sex"] == "female"
    assert bad["file"] == "broken.png" and "error" in bad and "/proc/" not in bad["error"]


def _dark(path: Path, out: Path) -> Path:
    """The radiograph at 4% of its brightness: refused by the input check (edge.quality) as too dark."""
    from PIL import Image

    Image.eval(Image.open(path).convert("L"), lambda v: v * 4 // 100).save(out)
    return out


def test_refused_image_is_said_plainly(client, tmp_path):
    if not hasattr(edge.runtime, "Rejected"):
        pytest.skip("the runtime has no input check (edge.quality) yet")
    got = client.post("/v1/predict", files=_files(_dark(SAMPLES[1], tmp_path / "dark.png"))).json()["results"][0]
    assert got["file"] == "dark.png" and got["status"] == "rejected" and "too dark" in got["error"]
    assert got.get("bone_age_months") is None


def test_dicom_upload(client, service, tmp_path):
    path = write(radiograph_dataset(SAMPLES[1], "DX"), tmp_path / "hand.dcm")
    got = client.post("/v1/predict", files=_files(path)).json()["results"][0]
    _same(got, _expected(service, path, sex="M"))  # the file's own PatientSex is the given sex ...
    assert got["given_sex_source"] == "DICOM PatientSex"
    assert got["chronological_age_months"] == pytest.approx(144.4, abs=0.1)  # ... and its dates give the age


def test_csv_has_edge_infer_columns(client, service):
    r = client.post("/v1/predict?format=csv", files=_files(SAMPLES[0]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows[0]["file"] == SAMPLES[0].name
    want = _expected(service, SAMPLES[0])
    assert float(rows[0]["bone_age_months"]) == want["bone_age_months"] and rows[0]["model"] == want["model"]


@pytest.mark.parametrize("request_kwargs, status", [
    ({"files": [("files", ("big.png", b"x" * (2 * 2**20 + 1), "image/png"))]}, 413),  # over --max-upload-mb
    ({"files": [("files", (f"{k}.png", b"x", "image/png")) for k in range(5)]}, 400),  # over max_files
    ({"data": {"sex": "F"}, "files": [("other", ("a.png", b"x", "image/png"))]}, 400),  # no 'files' field
    ({"json": {"files": []}}, 415),  # not multipart
])
def test_refused_requests(client, request_kwargs, status):
    r = client.post("/v1/predict", **request_kwargs)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)


def test_bad_form_values_are_422(client):
    r = client.post("/v1/predict", files=_files(SAMPLES[0]), data={"sex": "X"})
    assert r.status_code == 422 and "sex" in r.json()["detail"]
    r = client.post("/v1/predict?format=xml", files=_files(SAMPLES[0]))
    assert r.status_code == 422


def test_uploads_never_spill_to_a_temporary_file(client, monkeypatch, tmp_path):
    """Starlette spools uploads over 1 MB to a temporary file on disk; the server keeps them in memory."""
    import starlette.formparsers as fp

    made = []

    class Recording(fp.SpooledTemporaryFile):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(fp, "SpooledTemporaryFile", Recording)
    from PIL import Image

    big = tmp_path / "big.png"
    Image.open(SAMPLES[0]).resize((1200, 1500)).save(big, compress_level=0)
    assert big.stat().st_size > 1.5 * 2**20
    assert client.post("/v1/predict", files=_files(big)).status_code == 200
    assert made and not any(f._rolled for f in made)


def test_health_model_openapi(client, service):
    assert client.get("/v1/health").json() == {"status": "ok"}
    model = client.get("/v1/model").json()
    meta = service.model.bundle.meta
    assert (model["name"], model["version"]) == (meta["model"]["name"], meta["model"]["version"])
    assert model["reference_metrics"]["mae"] == meta["reference_metrics"]["mae"]
    assert model["input"]["height"] == service.model.spec.height
    spec = client.get("/openapi.json").json()
    form = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"files", "sex", "age"} <= form["properties"].keys()
    assert {"/v1/health", "/v1/model", "/v1/report"} <= spec["paths"].keys()
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    assert "<form" in client.get("/").text


def test_token(service):
    locked = TestClient(create_app(service, token=TOKEN))
    assert locked.get("/v1/health").status_code == 200
    assert locked.get("/v1/model").status_code == 401
    assert locked.post("/v1/predict", files=_files(SAMPLES[0])).status_code == 401
    assert locked.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = locked.post("/v1/predict", files=_files(SAMPLES[0]), headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


def test_report(client, service):
    """The printable page of edge.clinical.report for one upload, in clinical context (age given here)."""
    r = client.post("/v1/report", files=_files(SAMPLES[1]), data={"sex": "M", "age": "11y"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    want = _expected(service, SAMPLES[1], sex="M")
    assert f"{want['bone_age_months']:.0f} months" in r.text and "132.0 months" in r.text  # bone age, age given
    assert "research use" in r.text.lower()
    assert SAMPLES[1].name in r.text and 'alt="occlusion heatmap"' in r.text
    bad = client.post("/v1/report", files=[("files", ("broken.png", b"nope", "image/png"))])
    assert bad.status_code == 422 and bad.json()["detail"].startswith("broken.png: ")
    assert client.post("/v1/predict", files=_files(SAMPLES[1]), data={"age": "42"}).status_code == 422


def test_token_from_the_environment_and_loopback_addresses(monkeypatch):
    from edge.cli.serve import TOKEN_ENV, is_loopback, parse_args

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert parse_args([]).token == TOKEN and parse_args(["--token", "other"]).token == "other"
    assert parse_args([]).host == "127.0.0.1"
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "clinic-pc.local"]))


# --- the real server -------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, tmp: Path):
        self.port = _free_port()
        self.log = tmp / f"server-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli.serve", "--port", str(self.port), *args],
                                     cwd=REPO, env=repo_env(), stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError(f"edge-serve did not start: {self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp=tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()


def test_access_log_carries_no_file_names(server):
    r = httpx.post(server.url + "/v1/predict", files=_files(SAMPLES[0], name=SECRET_NAME), timeout=60)
    assert r.status_code == 200 and r.json()["results"][0]["file"] == SECRET_NAME
    time.sleep(0.5)
    log = server.output()
    assert "POST /v1/predict" in log  # the access log is on ...
    assert SECRET_NAME not in log and "Doe" not in log  # ... and names no file
    assert "127.0.0.1:" in log and "0.0.0.0" not in log


def test_concurrent_requests_share_one_model(server, service, tmp_path):
    """8 clients at once, each answer equal to BoneAgeModel.predict on its own file (no mix-up, no error)."""
    from concurrent.futures import ThreadPoolExecutor

    files = [*SAMPLES, write(radiograph_dataset(SAMPLES[0], "DX", sex="F"), tmp_path / "girl.dcm")]
    want = {p.name: _expected(service, p, sex="F" if p.suffix == ".dcm" else None) for p in files}

    def client(k: int) -> list[tuple[str, dict]]:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return [(p.name, c.post("/v1/predict", files=_files(p)).json()["results"][0])
                    for p in (files[(k + j) % len(files)] for j in range(4))]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(client, range(8)) for a in batch]
    assert len(answers) == 32
    for name, got in answers:
        assert got["file"] == name
        _same(got, want[name])


def test_other_address_warns_and_needs_a_token(tmp_path):
    s = Server("--host", "0.0.0.0", tmp=tmp_path)
    try:
        out = s.output()
        assert "WARNING: listening on 0.0.0.0" in out
        token = out.split("this run's token: ")[1].split()[0]
        assert httpx.get(s.url + "/v1/model").status_code == 401
        assert httpx.get(s.url + "/v1/model", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        s.stop()


# --- the page in a real browser ---------------------------------------------------------------------------------

def _browser(download_dir: Path):
    """Headless Debian chromium through chromium-driver (selenium); skipped, saying why, when absent."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("BROWSER TESTS SKIPPED: Debian chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does it as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={download_dir / 'profile'}",
                 "--window-size=1100,1300"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def test_page_in_headless_chromium(server, service, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _browser(tmp_path)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: service.model_info()["name"] in b.find_element(By.ID, "model").text)
        hands = SAMPLES[1:3]  # two boys' radiographs
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in hands))
        # Drop the same files on the drop zone (a real drop event carrying the File objects) instead.
        browser.execute_script("""
            const input = document.getElementById("files"), moved = new DataTransfer();
            [...input.files].forEach((f) => moved.items.add(f));
            input.value = "";
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: moved}));""")
        assert browser.find_element(By.ID, "chosen").text == ", ".join(p.name for p in hands)
        assert not browser.execute_script('return document.getElementById("files").files.length')
        Select(browser.find_element(By.ID, "sex")).select_by_value("M")
        browser.find_element(By.ID, "age").send_keys("10y")
        browser.find_element(By.ID, "run").click()
        wait.until(seen.presence_of_all_elements_located((By.CSS_SELECTOR, ".result .bone-age")))
        shown = browser.find_elements(By.CSS_SELECTOR, ".result .bone-age")
        assert len(shown) == 2
        for element, path in zip(shown, hands):
            want = service.model.predict(path, sex="M").bone_age_months  # BoneAgeModel on the same file
            assert element.text == f"{want:.1f}"
            assert float(element.get_attribute("data-months")) == round(want, 1)
        fields = {e.get_attribute("data-field") for e in browser.find_elements(By.CSS_SELECTOR, ".result tr")}
        assert {"bone_age_months", "p_male", "given_sex", "backend", "chronological_age_months"} <= fields
        browser.find_element(By.ID, "download-csv").click()
        csv_file = tmp_path / "bone-age.csv"
        WebDriverWait(browser, 30).until(lambda b: csv_file.exists() and csv_file.stat().st_size > 0)
        rows = list(csv.DictReader(csv_file.open()))
        assert [r["file"] for r in rows] == [p.name for p in hands]
        browser.find_element(By.CSS_SELECTOR, ".result button.report").click()
        report = tmp_path / f"{hands[0].stem}-report.html"
        WebDriverWait(browser, 60).until(lambda b: report.exists() and report.stat().st_size > 0)
        assert "Bone age estimate" in report.read_text()
        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "web-page.png"
        browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("EDGE_UPDATE_SCREENSHOT"):  # refresh the README's picture: EDGE_UPDATE_SCREENSHOT=1
            shutil.copy(shot, REPO / "docs" / "img" / "web-page.png")
    finally:
        browser.quit()
