// Generate: an image job for a soul and a cue, in a format the service encodes, followed to its
// animation; "Another one" asks again for a new variant.
import { runJob } from "../api.js";
import { $, busy, failureText, fillSelect, fillSouls, onChoice, progressOf, say, showMedia, userId } from "../ui.js";

export function generatePanel() {
  let souls = [];
  let lastSpec = null;

  function showSoul() {
    const soul = souls.find((s) => s.soul_id === $("#soul").value);
    const info = $("#soul-info");
    info.replaceChildren();
    if (!soul) return;
    for (const tag of soul.style_tags) {
      info.append(Object.assign(document.createElement("span"), { className: "tag", textContent: tag }));
    }
    for (const color of soul.palette.colors || []) {
      const swatch = Object.assign(document.createElement("span"), { className: "swatch", title: color });
      swatch.style.background = color;
      info.append(swatch);
    }
    if (soul.palette.hint) info.append(` ${soul.palette.hint}`);
  }

  async function generate(spec) {
    say($("#gen-error"), "");
    $("#another").disabled = true;
    try {
      const job = await runJob(spec, progressOf($("#gen-progress")));
      if (job.status !== "succeeded") throw new Error(failureText(job));
      const answer = job.result;
      showMedia($("#gen-image"), $("#gen-video"), answer);
      $("#gen-variant").textContent = answer.variant_id;
      $("#gen-cache").textContent = answer.cache === "hit" ? "cache hit" : "new render (miss)";
      $("#gen-result").hidden = false;
      document.dispatchEvent(new CustomEvent("studio:variant", { detail: answer })); // panels/print.js
      lastSpec = spec;
    } catch (error) {
      say($("#gen-error"), error.message);
    } finally {
      $("#another").disabled = lastSpec === null;
    }
  }

  onChoice("souls", (answer) => {
    souls = answer;
    fillSouls($("#soul"), souls);
    showSoul();
  });
  onChoice("info", (info) => fillSelect($("#format"), info.formats.map((f) => new Option(f, f))));
  $("#soul").addEventListener("change", showSoul);
  $("#generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const spec = {
      kind: "image",
      soul_id: $("#soul").value,
      cue: $("#cue").value,
      user_id: userId(),
      // Before GET /info has answered there is no choice yet: the service's default (gif).
      format: $("#format").value || undefined,
    };
    busy($("#generate"), () => generate(spec));
  });
  $("#another").addEventListener("click", () => {
    if (lastSpec) busy($("#generate"), () => generate({ ...lastSpec, user_id: userId() }));
  });
}
