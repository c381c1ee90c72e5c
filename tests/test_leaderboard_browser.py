"""The leaderboard Space rendered in headless Chromium (Playwright), served on 127.0.0.1 only.

Two tiny random base models are submitted and evaluated for real (PCam, 2 rows each) on the
loopback Hub; the app must show both, filter them from the search box, never load anything from
outside 127.0.0.1, and leave a screenshot in test-artifacts/leaderboard.png. Skipped, with the reason,
when Playwright or Debian's chromium is missing.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.hub_fixtures import blocked_network_attempts
from support.hub_server import HubServer

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported
pytest.importorskip("torch")
pytest.importorskip("gradio", reason="gradio is not installed: the leaderboard Space cannot be rendered")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.browser  # Chromium through Playwright: `make test-fast` skips it

from huggingface_hub import HfApi  # noqa: E402

from pathinsight_models.leaderboard import run_pending, submit  # noqa: E402
from pathinsight_models.publish import push_dataset  # noqa: E402
from pathinsight_models.tiny import save_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "test-artifacts" / "leaderboard.png"


@pytest.fixture(scope="module")
def leaderboard(hub: HubServer, sample_build, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lb-browser")
    api = HfApi()
    data_id = hub.new_repo_id("PathEnhanceDS")
    push_dataset(sample_build.output, data_id)
    lb = hub.new_repo_id("browser-lb")
    models = {}
    for family in ("llava", "idefics3"):
        local = save_tiny_model(family, root / family, seed=0)
        (local / "README.md").write_text(f"---\nlicense: apache-2.0\ntags: [{family}]\n---\n# tiny {family}\n")
        repo_id = hub.new_repo_id(f"tiny-{family}")
        api.create_repo(repo_id)
        api.upload_folder(repo_id=repo_id, folder_path=str(local))
        submit(repo_id, lb)
        models[family] = repo_id
    done = run_pending(lb, data=data_id, tasks=["pcam"], limit=2, n_resamples=0, batch_size=2, progress=False)
    assert [r.status for r in done] == ["FINISHED", "FINISHED"], [r.error for r in done]
    return {"id": lb, "models": models}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_leaderboard_space_in_headless_chromium(leaderboard: dict):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to render the Space")
    spec = importlib.util.spec_from_file_location("leaderboard_app", ROOT / "hub_scripts" / "leaderboard" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    llava, idefics = leaderboard["models"]["llava"], leaderboard["models"]["idefics3"]

    blocked_before = len(blocked_network_attempts())
    demo = app.build_app(leaderboard["id"])
    _, url, share = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                share=False, quiet=True)
    outside: list[str] = []
    page_errors: list[str] = []
    try:
        assert share is None
        origin = urlsplit(url)

        def guard(route) -> None:  # the page may only talk to the app itself
            target = urlsplit(route.request.url)
            if target.scheme in ("data", "blob") or (target.hostname, target.port) == (origin.hostname, origin.port):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.route("**/*", guard)
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                page.goto(url, wait_until="load")
                table = page.locator("#leaderboard-table")

                def cell(text: str):  # Gradio also renders hidden copies of cells to measure columns
                    return table.get_by_text(text, exact=True).filter(visible=True)

                for model in (llava, idefics):
                    sync_api.expect(cell(model)).to_have_count(1, timeout=30_000)
                sync_api.expect(cell("PCam acc")).to_have_count(1)
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)

                # Search filters rows in the browser, through the app's event handlers.
                page.get_by_label("Search model").fill("idefics")
                sync_api.expect(cell(llava)).to_have_count(0, timeout=30_000)
                sync_api.expect(cell(idefics)).to_have_count(1)
                page.get_by_role("tab", name="Queue").click()
                sync_api.expect(page.get_by_text("FINISHED", exact=True).filter(visible=True)).to_have_count(
                    2, timeout=30_000)
            finally:
                browser.close()
    finally:
        demo.close()
    assert outside == [], f"the page tried to load from outside 127.0.0.1: {outside}"
    assert page_errors == []
    assert blocked_network_attempts()[blocked_before:] == []
    assert SCREENSHOT.stat().st_size > 10_000
