"""The dashboard in headless Debian Chromium: paste a key, submit a preset, watch the job finish, read its speed block.

The server runs the dry-run runner (the UI is under test, not the compression). Skips when
chromium, chromedriver or selenium is missing (`apt-get install chromium chromium-driver`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.service_setup import fake_store_entry
from tests.servers import Server, cli, service_env

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium / chromium-driver not installed")


@pytest.fixture
def browser(tmp_path: Path):  # noqa: ANN201
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1400",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_submit_a_job_and_watch_it_finish(browser, tmp_path: Path) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    fake_store_entry(home)
    env = service_env(tmp_path, home, COMPRESSOR_JOB_RUNNER="dry-run", COMPRESSOR_DRY_RUN_LAYER_S="0.4")
    server = Server(env, tmp_path / "serve.log")
    try:
        key = cli(env, "keys", "create", "--name", "browser").stdout.strip()
        wait = WebDriverWait(browser, 90, ignored_exceptions=(StaleElementReferenceException,))  # slow shared CI; the page re-renders while polled
        browser.get(f"{server.url}/")
        wait.until(EC.presence_of_element_located((By.ID, "page-error")))  # no key yet: 401 shown
        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.ID, "save-key").click()
        wait.until(EC.presence_of_element_located((By.ID, "jobs-table")))

        browser.get(f"{server.url}/dashboard/#/submit")
        wait.until(lambda d: "quantize" in d.find_element(By.ID, "recipe-json").get_attribute("value"))
        assert Select(browser.find_element(By.ID, "recipe-preset")).first_selected_option.text == "w4a16-rtn"
        Select(browser.find_element(By.ID, "recipe-preset")).select_by_visible_text("w4a16-gptq")  # its eval measures speed
        wait.until(lambda d: '"prompt_tokens": 64' in d.find_element(By.ID, "recipe-json").get_attribute("value"))
        tokens = browser.find_element(By.ID, "max-tokens")
        tokens.clear()
        tokens.send_keys("1024")
        browser.find_element(By.ID, "recipe-json").click()  # blur: the override goes into the JSON
        wait.until(lambda d: '"max_tokens": 1024' in d.find_element(By.ID, "recipe-json").get_attribute("value"))
        browser.find_element(By.ID, "submit-button").click()

        wait.until(lambda d: "#/jobs/job_" in d.current_url)
        WebDriverWait(browser, 180, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: d.find_element(By.ID, "job-status").text in ("succeeded", "failed", "cancelled"))
        browser.save_screenshot(str(tmp_path / "job.png"))
        assert browser.find_element(By.ID, "job-status").text == "succeeded", server.output()
        assert "perplexity (wiki)" in browser.find_element(By.ID, "metrics").text
        assert browser.find_elements(By.CSS_SELECTOR, "#ppl-plot canvas"), "perplexity plot not drawn"
        assert browser.find_elements(By.CSS_SELECTOR, "#progress-plot canvas"), "progress plot not drawn"
        speed = browser.find_element(By.ID, "speed-table").text  # the dry run's speed section, as the pipeline writes it
        assert "fake-quant vs reloaded" in speed and "20.500" in speed and "20.510" in speed
        assert "1.50×" in browser.find_element(By.CSS_SELECTOR, 'tr[data-phase="decode-8"]').text
        assert "4.25 bits/weight" in speed
        hopper = browser.find_element(By.CSS_SELECTOR, 'tr[data-engine="vllm-hopper"]').text  # the rule table's row
        assert "yes" in hopper and "Marlin" in hopper
        assert "model.safetensors" in browser.find_element(By.ID, "artifacts-table").text
        assert "succeeded" in browser.find_element(By.ID, "job-events").text
        job_id = browser.find_element(By.ID, "job-id").text

        browser.get(f"{server.url}/dashboard/#/jobs")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]'))
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    finally:
        server.stop()


def test_import_a_model_and_see_its_details(browser, tmp_path: Path) -> None:  # noqa: ANN001
    """The Models page: import a sharded folder from the allow-list, follow its job, read its details."""
    from tests.model_folders import sharded_folder

    home, root = tmp_path / "home", tmp_path / "models-in"
    fake_store_entry(home)
    folder = sharded_folder(root / "Tiny-Llama")
    env = service_env(tmp_path, home, COMPRESSOR_JOB_RUNNER="dry-run", COMPRESSOR_MODEL_SOURCES=str(root))
    server = Server(env, tmp_path / "serve.log")
    try:
        key = cli(env, "keys", "create", "--name", "browser").stdout.strip()
        wait = WebDriverWait(browser, 90, ignored_exceptions=(StaleElementReferenceException,))
        browser.get(f"{server.url}/dashboard/#/models")
        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.ID, "save-key").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-model="smollm2-135m"]'))

        browser.find_element(By.ID, "import-source").send_keys(str(tmp_path / "elsewhere"))
        browser.find_element(By.ID, "import-button").click()
        wait.until(lambda d: "not allowed" in d.find_element(By.ID, "import-error").text)
        assert f"local folders under {root}" in browser.find_element(By.ID, "import-error").text

        source = browser.find_element(By.ID, "import-source")
        source.clear()
        source.send_keys(str(folder))
        browser.find_element(By.ID, "import-button").click()
        wait.until(lambda d: "#/jobs/job_" in d.current_url)
        wait.until(lambda d: d.find_element(By.ID, "job-status").text in ("succeeded", "failed", "cancelled"))
        assert browser.find_element(By.ID, "job-status").text == "succeeded", server.output()
        assert "LlamaForCausalLM" in browser.find_element(By.ID, "job-metrics").text

        browser.get(f"{server.url}/dashboard/#/models/tiny-llama")
        wait.until(lambda d: d.find_elements(By.ID, "files-table"))
        assert browser.find_element(By.ID, "model-arch").text == "LlamaForCausalLM"
        files = browser.find_element(By.ID, "files-table").text
        assert "model-00001-of-" in files and "model.safetensors.index.json" in files
        assert "applies" in browser.find_element(By.CSS_SELECTOR, 'tr[data-method="gptq"]').text
        w4a8 = browser.find_element(By.CSS_SELECTOR, 'tr[data-recipe="w4a8-fp8-gptq"]').text.split()
        assert w4a8 == ["w4a8-fp8-gptq", "refused", "yes", "no", "yes", "no"]  # width 48 < group 128; Hopper-only W4A8
        browser.find_element(By.ID, "delete-model").click()
        wait.until(lambda d: d.current_url.endswith("#/models") and d.find_elements(By.ID, "models-table"))
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, 'tr[data-model="tiny-llama"]'))
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "40" not in e["message"]]
    finally:
        server.stop()
