"""The studio page in a real browser: Playwright driving Debian's headless Chromium against the
graph on a local Ray, with API keys on. Screenshots of each screen go to test-artifacts/studio/
(not committed). Skips where Chromium or Playwright is missing; fails then under
SOUL_TEST_STRICT=1."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from job_client import locked_project
from matplotlib import cbook
from PIL import Image
from shared_graph import souls_of
from skimage import data as skimage_data
from soul_client import API_KEY, Graph

from tests.support import skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHARACTER, _ = souls_of("studio")  # a soul of its own: its identity is locked here
SHOTS = Path("test-artifacts/studio")
# The session's quick renders, but for the queue's test (``slow_renders``); the shared graph's
# JobWorker has one slot, watched every 0.1 s.
TIMEOUT_MS = 120_000
# Wraps the page's fetch so that the first event stream of a job breaks after its first chunk
# (the job's first status), as Serve's request timeout or a replica restart breaks one.
CUT_THE_FIRST_STREAM = """() => {
  const realFetch = window.fetch;
  window.studioRealFetch = realFetch;
  window.studioCuts = 0;
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    if (!/\\/jobs\\/[^/]+\\/events$/.test(String(input)) || window.studioCuts > 0) return response;
    window.studioCuts += 1;
    const reader = response.body.getReader();
    let chunks = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (chunks++ > 0) {
          reader.cancel();
          controller.error(new TypeError("the test cut the stream"));
          return;
        }
        const { value, done } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        skip_or_fail(f"no Chromium at {CHROMIUM} (Debian packages chromium, chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, graph: Graph) -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{graph.base_url}/")  # redirects to /studio
    assert page.url.endswith("/studio")
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#soul option[value=nova]", state="attached")
    # The formats come from GET /info, which can answer after the souls on a busy machine.
    page.wait_for_selector("#format option[value=gif]", state="attached")
    yield page
    context.close()


@pytest.fixture(scope="module")
def windmill(graph: Graph) -> str:
    """A key of nova's with two variants, and a second key: the catalog tests' own, made over
    the API, whatever else ran before them."""
    for cue, user_id in [("a windmill at night", "mill"), ("a windmill at night", "mill"),
                         ("a red tram", "mill")]:  # fmt: skip
        response = graph.image("nova", cue, user_id)
        assert response.status_code == 200 and response.json()["cache"] == "miss", response.text
    return "windmill"


def tab(page: Any, name: str) -> None:
    page.click(f"nav [data-tab={name}]")
    page.wait_for_selector(f"#tab-{name}", state="visible")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def loaded(page: Any, selector: str) -> None:
    """The <img> has really loaded: natural width > 0."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i?.complete && i.naturalWidth > 0 }",
        arg=selector,
    )


def test_without_the_key_the_page_says_so_in_words(browser: Any, graph: Graph) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{graph.base_url}/studio")
    page.wait_for_selector("#error:not([hidden])")
    assert "API key" in page.inner_text("#error")
    context.close()


def test_generate_shows_the_gif_and_another_one_is_a_new_variant(page: Any) -> None:
    tab(page, "generate")
    page.select_option("#soul", "nova")
    assert "pastel" in page.inner_text("#soul-info")  # the soul's tags and palette
    page.fill("#cue", "a lighthouse in the rain")
    page.click("#generate")
    page.wait_for_selector("#gen-progress:not([hidden])")
    loaded(page, "#gen-image")
    first = page.inner_text("#gen-variant")
    assert first and "miss" in page.inner_text("#gen-cache")
    shot(page, "generate")
    page.click("#another")
    page.wait_for_function(
        "v => document.querySelector('#gen-variant').textContent !== v", arg=first
    )
    loaded(page, "#gen-image")
    assert page.inner_text("#gen-variant") != first


def test_a_printed_variant_links_its_2048_square_png(page: Any, graph: Graph) -> None:
    tab(page, "generate")
    page.select_option("#soul", "nova")
    page.fill("#cue", "a kite over the dunes")
    page.click("#generate")
    page.locator("#print-form").wait_for(state="visible")
    page.select_option("#print-background", "remove")
    page.select_option("#print-format", "jpeg")
    page.click("#print-go")  # a cutout needs png: the service's 422 names the field
    error = page.locator("#print-form .field-error[data-field=format]")
    error.wait_for(state="visible")
    assert "png" in error.inner_text() and page.locator("#print-error").is_visible()
    page.select_option("#print-background", "keep")
    page.select_option("#print-size", "portrait")
    page.select_option("#print-format", "png")
    page.click("#print-go")
    page.locator("#print-link").wait_for(state="visible")
    assert page.inner_text("#print-link") == "2048x2048 PNG"
    assert page.locator("#print-error").is_hidden() and error.is_hidden()
    shot(page, "print")
    response = graph.client.get(page.get_attribute("#print-link", "href"))
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        assert (image.size, image.format) == ((2048, 2048), "PNG")


def test_a_selfie_names_its_landmark(page: Any) -> None:
    tab(page, "selfie")
    page.wait_for_selector("#city option[value=paris]", state="attached")
    page.select_option("#city", "paris")
    page.click("#selfie-go")
    loaded(page, "#selfie-image")
    assert "variant" in page.inner_text("#selfie-place")
    shot(page, "selfie")


def test_a_pack_of_three_shows_three_items(page: Any) -> None:
    tab(page, "pack")
    page.fill("#pack-cues", "a cat\na dog\nan owl")
    page.click("#pack-go")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#pack-items img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 3"
    )
    assert page.locator("#pack-items .pack-item").count() == 3
    shot(page, "pack")


def test_a_queued_job_is_cancelled_from_the_queue(
    page: Any, graph: Graph, slow_renders: None
) -> None:
    def submit(cue: str) -> str:
        body = {"kind": "image", "soul_id": "nova", "cue": cue, "user_id": "queue"}
        response = graph.client.post("/jobs", json=body)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    busy = submit("a long winter")  # keeps the one worker busy
    waiting = submit("a short summer")
    tab(page, "queue")
    row = f"#queue-list tr[data-job-id='{waiting}']"
    page.wait_for_selector(f"{row} button.cancel")
    page.click(f"{row} button.cancel")
    page.wait_for_function(
        "r => document.querySelector(r + ' .status')?.textContent === 'cancelled'", arg=row
    )
    stats = page.inner_text("#queue-stats")
    assert "Running: image 1 normal" in stats and "Workers alive: 1" in stats
    shot(page, "queue")
    graph.client.post(f"/jobs/{busy}/cancel")  # it has kept the worker busy long enough


def test_an_invalid_style_shows_the_error_next_to_its_field(page: Any) -> None:
    tab(page, "styles")
    page.select_option("#style-soul", "valentina")
    page.fill("#style-base_model_ref", "")
    page.click("#style-save")
    error = page.locator(".field-error[data-field=base_model_ref]")
    error.wait_for(state="visible")
    assert "use civitai:<model version id>, or a tag" in error.inner_text()
    page.fill("#style-extra", "{not json")
    page.click("#style-save")
    page.locator(".field-error[data-field=extra]").wait_for(state="visible")
    shot(page, "styles")


def test_the_catalog_shows_keys_and_their_variants(page: Any, windmill: str) -> None:
    tab(page, "catalog")
    page.select_option("#catalog-soul", "nova")
    page.click("#catalog-load")
    page.locator("#catalog-keys button", has_text=windmill).click()
    loaded(page, "#catalog-variants img.thumb")
    assert page.locator("#catalog-variants img.thumb").count() == 2  # the fixture's two
    shot(page, "catalog")


def test_a_dropped_stream_is_picked_up_and_the_job_finishes(page: Any) -> None:
    tab(page, "generate")
    page.select_option("#soul", "nova")
    before = page.inner_text("#gen-variant")
    job_reads: list[str] = []

    def note_job_read(request: Any) -> None:
        if re.search(r"/jobs/(?!stats)[^/?]+$", request.url):
            job_reads.append(request.url)

    page.on("request", note_job_read)
    page.evaluate(CUT_THE_FIRST_STREAM)
    try:
        page.fill("#cue", "a harbour at dawn")
        page.click("#generate")
        page.wait_for_function(
            "v => document.querySelector('#gen-variant').textContent !== v", arg=before
        )
        loaded(page, "#gen-image")
        assert page.evaluate("() => window.studioCuts") == 1
        assert job_reads, "the studio did not read the job's state after its stream dropped"
        assert page.locator("#gen-error").is_hidden()
        assert "miss" in page.inner_text("#gen-cache")
    finally:
        page.remove_listener("request", note_job_read)
        page.evaluate("() => { window.fetch = window.studioRealFetch }")


def test_the_choices_come_from_the_service(page: Any, graph: Graph) -> None:
    info = graph.client.get("/info").json()
    places = graph.client.get("/cities").json()
    values = "options => options.map(o => o.value)"
    assert page.eval_on_selector_all("#format option", values) == info["formats"]
    assert info["variations"] and "pose" in info["variations"]
    assert page.eval_on_selector_all("#pack-vary option", values) == ["", *info["variations"]]
    cities = [c["city_key"] for c in places["cities"]]
    assert page.eval_on_selector_all("#city option", values) == cities
    assert page.eval_on_selector_all("#mood option", values) == places["moods"]


def test_the_catalog_pages_past_its_first_page(page: Any, graph: Graph, windmill: str) -> None:
    everything = graph.client.get("/keys", params={"soul_id": "nova", "limit": 200}).json()
    assert len(everything["keys"]) >= 2 and everything["next_after"] is None

    def first_page_of_one(route: Any) -> None:
        response = route.fetch()
        first = response.json()["keys"][:1]
        route.fulfill(response=response, json={"keys": first, "next_after": first[0]["pk_id"]})

    page.route(re.compile(r"/keys\?"), first_page_of_one, times=1)
    tab(page, "catalog")
    page.select_option("#catalog-soul", "nova")
    page.click("#catalog-load")
    page.locator("#catalog-more").wait_for(state="visible")
    assert page.locator("#catalog-keys li").count() == 1
    page.click("#catalog-more")
    page.wait_for_function(
        "n => document.querySelectorAll('#catalog-keys li').length === n",
        arg=len(everything["keys"]),
    )
    assert page.locator("#catalog-more").is_hidden()
    assert page.locator("#catalog-keys button", has_text=windmill).count() == 1


def test_a_project_asset_is_generated_shown_and_locked(page: Any) -> None:
    tab(page, "projects")
    page.fill("#proj-name", "Studio project")
    page.click("#proj-create")
    # The client's earlier projects fill the list first: wait until the new one is chosen.
    page.wait_for_function(
        "() => document.querySelector('#proj-project').selectedOptions[0]"
        "?.textContent.startsWith('Studio project')"
    )
    page.select_option("#proj-type", "prop")
    page.fill("#proj-asset-name", "Lamp")
    page.fill("#proj-prompt", "a brass oil lamp")
    page.click("#proj-generate")
    third = "#proj-versions .proj-version figure:nth-of-type(3) img"
    page.wait_for_function(  # the three images, or the error the panel shows instead
        "s => document.querySelector(s) || !document.querySelector('#proj-error').hidden",
        arg=third,
    )
    assert page.locator("#proj-error").is_hidden(), page.inner_text("#proj-error")
    page.wait_for_selector(third)
    loaded(page, "#proj-versions figure img")
    assert "v1 · unlocked" in page.inner_text("#proj-versions")
    page.click("#proj-lock")
    page.wait_for_function(
        "() => document.querySelector('#proj-versions').textContent.includes('v1 · locked')"
    )
    shot(page, "projects")


def test_a_storyboard_goes_from_a_script_to_an_approved_frame_and_a_pdf(
    page: Any, graph: Graph
) -> None:
    """A project with Nova and the harbor locked; the script names Zed, whom it lacks (listed
    with the line), then Nova again: two scenes, swapped, one rendered (the tiny model draws no
    face: needs_review with its report), approved with a note, exported as a PDF."""
    assets = [
        {"asset_type": "character", "name": "Nova", "canonical_prompt": "a sailor", "seed": 3},
        {"asset_type": "environment", "name": "Harbor", "canonical_prompt": "a harbor", "seed": 4},
    ]
    pid = locked_project(graph, "Storyboard project", assets)
    script = "EXT. HARBOR - DAY\n\nNova waves at the boats.\n\nNOVA\nAhoy!\n\n"
    tab(page, "storyboard")
    page.wait_for_selector(f"#sb-project option[value='{pid}']", state="attached")
    page.select_option("#sb-project", pid)
    page.fill("#sb-script", script + "EXT. HARBOR - NIGHT\n\nZED\nWho goes there?\n")
    page.click("#sb-compile")
    page.locator("#sb-unresolved li").first.wait_for()
    unresolved = page.inner_text("#sb-unresolved")
    assert "ZED" in unresolved and "line 10" in unresolved, unresolved
    assert page.locator("#sb-error").is_visible()
    page.fill("#sb-script", script + "EXT. HARBOR - NIGHT\n\nNOVA\nWho goes there?\n")
    page.click("#sb-compile")
    page.wait_for_function("() => document.querySelectorAll('#sb-scenes li').length === 2")
    assert page.locator("#sb-unresolved li").count() == 0 and page.locator("#sb-error").is_hidden()
    scenes = "() => [...document.querySelectorAll('#sb-scenes li')].map(li => li.dataset.sceneId)"
    day, night = page.evaluate(scenes)
    page.click(f"#sb-scenes li[data-scene-id='{day}'] button.down")
    page.wait_for_function(f"() => ({scenes})()[0] === '{night}'")
    scene = f"#sb-scenes li[data-scene-id='{day}']"
    page.click(f"{scene} button.render")
    status = f"{scene} figure.sb-frame .sb-status"
    page.wait_for_selector(status)
    loaded(page, f"{scene} figure.sb-frame img")
    assert "v1 · needs_review" in page.inner_text(status)
    assert "identity NOVA: FAIL" in page.inner_text(f"{scene} .sb-report")
    page.fill("#sb-note", "the tiny model draws no face")
    page.click(f"{scene} button.approve")
    page.wait_for_function(
        "s => document.querySelector(s)?.textContent.includes('approved')", arg=status
    )
    page.click("#sb-export-pdf")
    page.locator("#sb-export-link").wait_for(state="visible")
    shot(page, "storyboard")
    url = page.get_attribute("#sb-export-link", "href")
    assert url.split("?")[0].endswith(".pdf"), url
    pdf = graph.client.get(url)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_the_tabs_are_aria_tabs_that_follow_the_arrow_keys(page: Any) -> None:
    for tab_button in page.locator("[role=tablist] [role=tab]").all():
        panel = page.locator(f"#{tab_button.get_attribute('aria-controls')}")
        assert panel.get_attribute("role") == "tabpanel"
        assert panel.get_attribute("aria-labelledby") == tab_button.get_attribute("id")

    def chosen() -> list[str]:
        names: list[str] = page.evaluate(
            "() => [document.activeElement.dataset.tab,"
            " document.querySelector('[role=tab][aria-selected=true]').dataset.tab]"
        )
        return names

    tab(page, "generate")
    page.focus("nav [data-tab=generate]")
    for key, name in [
        ("ArrowRight", "selfie"),
        ("ArrowLeft", "generate"),
        ("ArrowLeft", "catalog"),  # round the end
        ("Home", "generate"),
        ("End", "catalog"),
    ]:
        page.keyboard.press(key)
        assert chosen() == [name, name], key
        assert page.locator(f"#tab-{name}").is_visible()
        assert page.locator("[role=tabpanel]:visible").count() == 1
    tab(page, "generate")


def test_the_page_stays_usable_on_a_narrow_screen(page: Any) -> None:
    page.set_viewport_size({"width": 375, "height": 800})
    tab(page, "generate")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    assert page.locator("#generate").is_visible()
    shot(page, "narrow")


def jpeg_file(name: str, pixels: Any) -> dict[str, Any]:
    """A file for an <input type=file>: ``pixels`` as a JPEG."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return {"name": name, "mimeType": "image/jpeg", "buffer": out.getvalue()}


def test_a_character_is_described_given_a_photograph_locked_and_scores_images(
    page: Any,
) -> None:
    """Grace Hopper (matplotlib's sample, public domain) is the reference; her mirror image is
    verified by the face scorer, and another person (scikit-image's astronaut) is off model."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    tab(page, "characters")
    page.select_option("#char-soul", CHARACTER)
    page.fill("#char-hair_colour", "grey")
    page.fill("#char-features", "naval uniform, pearl earrings")
    page.click("#char-create")
    page.wait_for_function(  # the new version shown (the soul may have others: the fuzzer's)
        "() => document.querySelector('#char-prompt').textContent.includes('grey hair')"
        " && /Version \\d+ · unlocked/.test(document.querySelector('#char-state').textContent)"
    )
    assert "naval uniform, pearl earrings" in page.inner_text("#char-prompt")
    page.set_input_files("#char-files", [jpeg_file("hopper.jpg", hopper)])
    page.click("#char-upload")
    loaded(page, "#char-references img")
    assert page.locator("#char-references img").count() == 1
    page.click("#char-lock")
    page.wait_for_function(
        "() => /· locked/.test(document.querySelector('#char-state').textContent)"
    )
    assert page.is_disabled("#char-upload") and page.is_disabled("#char-lock")
    chosen = page.eval_on_selector("#char-version", "s => s.selectedOptions[0].textContent")
    assert re.fullmatch(r"v\d+ \(locked\)", chosen), chosen
    shot(page, "characters-locked")

    def verdict(name: str, pixels: Any) -> str:
        page.evaluate("() => { document.querySelector('#char-verdict').textContent = '' }")
        page.set_input_files("#char-score-file", [jpeg_file(name, pixels)])
        page.click("#char-score")
        page.wait_for_function("() => document.querySelector('#char-verdict').textContent")
        text: str = page.inner_text("#char-verdict")
        return text

    same = verdict("mirrored.jpg", np.ascontiguousarray(hopper[:, ::-1]))
    assert re.match(r"v\d+: verified by face \(0\.\d+ against 0\.363\)", same), same
    other = verdict("astronaut.jpg", skimage_data.astronaut())
    assert re.match(r"v\d+: off_model by face", other), other
    assert page.locator("#char-error").is_hidden()
    shot(page, "characters-scored")
