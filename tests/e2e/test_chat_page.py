"""The chat page in a real browser: Debian's headless Chromium, driven by Selenium through chromium-driver, on the
OpenAI server in front of the e2e tritonserver (decoupled: the page streams). Two turns stream text into the
page and the second sends the first; Stop ends a long answer and the engine goes idle well before the answer
could have ended by itself; errors read as the server's message; the page fits a phone's width. Skipped when
Chromium is missing (.ci/run installs it)."""
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from client.reliability import Server

from qwen_triton.serving.launcher import Ports, TritonServer
from qwen_triton.tools.fill_templates import fill_repository, values_for_engine


ROOT = Path(__file__).resolve().parents[2]
LONG_ANSWER_TOKENS = 2000  # seconds of generation on a CPU: more than Stop could ever take to arrive

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.e2e, pytest.mark.decoupled_only,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]

# Records, on every change to the last answer's text, its length and whether the page still streamed: text that
# shows up only once the answer is done would leave no record with 0 < length < final length while streaming.
WATCH_LAST_ANSWER = """
window.__growth = [];
new MutationObserver(() => {
  const last = document.querySelector('#messages > .message:last-child');
  if (last && last.dataset.role === 'assistant') {
    window.__growth.push([last.querySelector('.content').textContent.length, document.body.dataset.state]);
  }
}).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
"""
# The request bodies the page sends, as sent (the page's own fetch, wrapped).
RECORD_REQUESTS = """
window.__bodies = [];
const send = window.fetch.bind(window);
window.fetch = (url, options) => {
  if (options && options.body) window.__bodies.push(JSON.parse(options.body));
  return send(url, options);
};
"""


@pytest.fixture(scope="module")
def triton(long_engine, tmp_path_factory):
    """This module's own server (decoupled): its engine's answers run for seconds, so Stop lands mid-answer
    however slowly the browser clicks it."""
    root = tmp_path_factory.mktemp("chat_page")
    fill_repository(ROOT / "model_repository", values_for_engine(long_engine, device="cpu"), root / "repo")
    server = TritonServer(root / "repo", Ports.free(), log_file=root / "server.log", exit_timeout_s=5)
    server.decoupled = True
    with server:
        yield server


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # Debian's build: nothing is downloaded (Selenium Manager stays out)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900"):
        options.add_argument(arg)
    # "none": a command returns at once; with the default, ChromeDriver holds a key press that starts the page's
    # streaming fetch until the answer has ended, and Stop would come too late to test anything.
    options.page_load_strategy = "none"
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, openai_url):
    """The page loaded afresh (an empty conversation) at desktop width, its model listed."""
    browser.set_window_size(1200, 900)
    browser.get(openai_url + "/")
    wait_for(lambda: browser.execute_script("return document.readyState === 'complete' && document.body"
                                            " && document.body.dataset.state") == "idle", 30)
    assert browser.find_element("id", "model-name").text not in ("", "…")
    assert browser.find_element("id", "error").get_attribute("hidden") is not None
    browser.execute_script(WATCH_LAST_ANSWER + RECORD_REQUESTS)
    return browser


@pytest.fixture
def probe(triton) -> Server:
    return Server(f"127.0.0.1:{triton.ports.grpc}", triton.ports.metrics)


def wait_for(condition, timeout_s: float, poll_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"not true within {timeout_s} s: {condition}")


def set_value(driver, element_id: str, value) -> None:
    box = driver.find_element("id", element_id)
    box.clear()
    box.send_keys(str(value))


def send_turn(driver, text: str) -> None:
    """Types the message and presses Enter (the page's send key); returns once the answer is streaming."""
    turns = len(driver.find_elements("css selector", ".message.assistant"))
    driver.find_element("id", "prompt").send_keys(text + "\n")
    wait_for(lambda: len(driver.find_elements("css selector", ".message.assistant")) == turns + 1, 10)


def state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def last_answer(driver):
    return driver.find_elements("css selector", ".message.assistant")[-1]


def answer_text(driver) -> str:
    return driver.execute_script(
        "const a = document.querySelectorAll('.message.assistant .content'); return a[a.length - 1].textContent;")


def engine_steps(probe: Server) -> int:
    """The engine's step counter (NVIDIA's iteration_counter gauge); 0 before its first step."""
    text = urllib.request.urlopen(f"http://{probe.host}:{probe.metrics_port}/metrics", timeout=5).read().decode()
    found = re.search(r'^nv_trt_llm_general_metrics\{[^}]*general_type="iteration_counter"[^}]*\} (\S+)$', text, re.M)
    return int(float(found[1])) if found else 0


def test_two_turns_stream_into_the_page_and_the_second_sends_the_first(page, tmp_path):
    set_value(page, "temperature", 0)
    set_value(page, "max-tokens", 48)
    for turn, question in enumerate(["Hello! Who are you?", "Tell me more about that."]):
        page.execute_script("window.__growth = [];")
        send_turn(page, question)
        wait_for(lambda: state(page) == "idle", 60)
        answer, growth = last_answer(page), page.execute_script("return window.__growth")
        final = len(answer_text(page))
        assert final > 0 and answer.get_attribute("data-finish") in ("stop", "length")
        partial = {length for length, page_state in growth if page_state == "streaming" and 0 < length < final}
        assert partial, f"no partial text was shown while streaming: {growth[:20]}"
        assert [length for length, _ in growth] == sorted(length for length, _ in growth)  # it only grows
        assert answer.get_attribute("data-token-source") == "usage" and int(answer.get_attribute("data-tokens")) > 0
        assert float(answer.get_attribute("data-ttft-ms")) >= 0
        stats = answer.find_element("css selector", ".stats").text
        assert re.search(r"TTFT \d+ ms · [\d.]+ tok/s · \d+ tokens · (stop|length)", stats), stats
    first, second = page.execute_script("return window.__bodies")
    shown = page.execute_script("return [...document.querySelectorAll('.message .content')].map(e => e.textContent)")
    assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    assert [m["content"] for m in second["messages"][1:]] == shown[:3] and first["messages"] == second["messages"][:2]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    page.save_screenshot(str(tmp_path / "two_turns.png"))
    assert (tmp_path / "two_turns.png").stat().st_size > 0


def run_to_the_end(openai_url: str, body: dict) -> dict:
    """The page's request sent again unstreamed: at temperature 0 the same answer, this time to its end."""
    body = {**{k: v for k, v in body.items() if k != "stream_options"}, "stream": False}
    request = urllib.request.Request(openai_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def test_stop_ends_a_long_answer_and_the_engine_goes_idle(page, probe, openai_url, tmp_path):
    set_value(page, "temperature", 0)
    set_value(page, "max-tokens", LONG_ANSWER_TOKENS)
    assert probe.wait_idle(30) is not None
    steps_before = engine_steps(probe)
    send_turn(page, "Write a very long story about the sea.")
    wait_for(lambda: len(answer_text(page)) > 0, 30, poll_s=0.005)
    assert probe.busy() >= 1 and page.find_element("id", "stop").is_enabled(), (state(page), last_answer(page).text)
    page.find_element("id", "stop").click()
    wait_for(lambda: state(page) == "idle", 5)
    assert probe.wait_idle(2.0) is not None, probe.engine()
    steps = engine_steps(probe) - steps_before
    answer, stopped_text = last_answer(page), answer_text(page)
    assert answer.get_attribute("data-finish") == "stopped" and "stopped" in answer.text
    assert not page.find_element("id", "stop").is_enabled() and page.find_element("id", "send").is_enabled()
    time.sleep(0.3)
    assert answer_text(page) == stopped_text  # nothing arrives after Stop
    page.save_screenshot(str(tmp_path / "stopped.png"))
    # Not stopped, the same request runs one engine step per token to its end: Stop ended it before half of it.
    full = run_to_the_end(openai_url, page.execute_script("return window.__bodies")[-1])
    full_text, full_tokens = full["choices"][0]["message"]["content"], full["usage"]["completion_tokens"]
    assert 0 < steps <= full_tokens // 2, (steps, full_tokens)
    assert full_text.startswith(stopped_text) and len(stopped_text) < len(full_text)
    # The conversation goes on: the stopped answer, as shown, is sent as the assistant's turn.
    set_value(page, "max-tokens", 8)
    send_turn(page, "Thanks.")
    wait_for(lambda: state(page) == "idle", 60)
    assert last_answer(page).get_attribute("data-finish") in ("stop", "length")
    assert page.execute_script("return window.__bodies")[-1]["messages"][-2] == {"role": "assistant",
                                                                               "content": stopped_text}


def test_a_refused_request_shows_the_servers_message(page):
    set_value(page, "temperature", 5)  # OpenAI's range is 0 to 2
    send_turn(page, "Hello")
    wait_for(lambda: state(page) == "idle", 30)
    error = page.find_element("id", "error")
    assert error.is_displayed() and "temperature" in error.text and "400" in error.text
    assert last_answer(page).get_attribute("data-finish") == "error"
    set_value(page, "temperature", 0)  # the turn with no answer is not sent again: the next request alternates
    set_value(page, "max-tokens", 4)
    send_turn(page, "Hello again")
    wait_for(lambda: state(page) == "idle", 60)
    assert not error.is_displayed()
    assert [m["role"] for m in page.execute_script("return window.__bodies")[-1]["messages"]] == ["system", "user"]


def test_the_page_fits_a_phone(browser, openai_url, tmp_path):
    browser.set_window_size(390, 844)
    browser.get(openai_url + "/")
    wait_for(lambda: state(browser) == "idle", 30)
    assert browser.find_element("id", "settings").get_attribute("open") is None  # folded on a phone
    browser.find_element("css selector", "#settings summary").click()
    set_value(browser, "max-tokens", 8)
    send_turn(browser, "A long unbroken word: " + "x" * 300)  # must wrap, not widen the page
    wait_for(lambda: state(browser) == "idle", 60)
    width, inner = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= inner, (width, inner)
    send = browser.find_element("id", "send").rect
    assert send["x"] >= 0 and send["x"] + send["width"] <= inner
    browser.save_screenshot(str(tmp_path / "phone.png"))
