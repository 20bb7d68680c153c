// Characters: a soul's identity versions. Describe one, add references (files or a link), make
// its sheet and watch the views arrive, lock it, read its consistency report with the flagged
// images, and score any image against it.
import { call, followJob, upload } from "../api.js";
import { $, busy, failureText, fillSelect, fillSouls, onChoice, progressOf, say } from "../ui.js";

const EDITS = ["#char-upload", "#char-link", "#char-sheet", "#char-lock"];
const TEXT = ["age_range", "gender_presentation", "hair_colour", "hair_style", "eye_colour", "skin_tone", "build", "outfit", "free_text"];

function image(url, caption) {
  const figure = Object.assign(document.createElement("figure"), { className: "pack-item" });
  const img = Object.assign(document.createElement("img"), { src: url, alt: caption });
  figure.append(img, Object.assign(document.createElement("figcaption"), { textContent: caption }));
  return figure;
}

export function charactersPanel() {
  const soul = () => $("#char-soul").value;
  const base = () => `/souls/${encodeURIComponent(soul())}/identity`;
  const version = () => $("#char-version").value;
  const problem = (error) => say($("#char-error"), error.message);
  let editable = false; // the version shown is unlocked and the caller's
  const allowEdits = () => {
    for (const name of EDITS) $(name).disabled = !editable;
  };

  function description() {
    const described = {};
    for (const name of TEXT) described[name] = $(`#char-${name}`).value.trim();
    described.distinctive_features = $("#char-features").value.split(",").map((v) => v.trim()).filter(Boolean);
    return { description: described, negative_prompt: $("#char-negative").value.trim(), strength: Number($("#char-strength").value) };
  }

  function show(v) {
    $("#char-state").textContent = `Version ${v.version} · ${v.state}${v.parent ? ` · from ${v.parent}` : ""} · ${v.mine ? "yours" : "another client's"} · seeds ${v.seed_bank.join(", ")}`;
    $("#char-prompt").textContent = v.prompt;
    $("#char-references").replaceChildren(...v.references.map((r) => image(r.url, r.reference_id)));
    editable = v.state !== "locked" && v.mine;
    allowEdits();
  }

  async function load(chosen) {
    say($("#char-error"), "");
    const versions = await call("GET", base());
    fillSelect($("#char-version"), versions.map((v) => new Option(`v${v.version} (${v.state})`, String(v.version))));
    if (chosen) $("#char-version").value = String(chosen);
    const current = versions.find((v) => String(v.version) === version());
    if (current) show(current);
    else {
      editable = false;
      allowEdits();
      $("#char-references").replaceChildren();
    }
  }

  // A button is busy while its work runs; then the edits are as the version shown allows
  // (busy re-enables the button it disabled, a lock included).
  const act = async (button, work) => {
    await busy(button, async () => {
      say($("#char-error"), "");
      try {
        await work();
      } catch (error) {
        problem(error);
      }
    });
    allowEdits();
  };

  async function sheet() {
    const accepted = await call("POST", `${base()}/${version()}/sheet`);
    const job = await followJob(accepted.links, progressOf($("#char-progress")));
    if (!["succeeded", "partial"].includes(job.status)) throw new Error(failureText(job));
    await load(version());
  }

  async function report() {
    const answer = await call("GET", `${base()}/report`);
    $("#char-rates").textContent = answer.versions.map((r) =>
      `v${r.version}: ${r.verified} verified, ${r.off_model} off model, ${r.unscorable} unscorable, ${r.flagged} flagged` +
      (r.consistency_rate === null ? "" : ` · consistency ${(100 * r.consistency_rate).toFixed(0)} %`)).join("\n") || "No judged variants yet.";
    $("#char-flagged").replaceChildren(...answer.flagged.map((v) => image(v.cover_url, `flagged ${v.variant_id}`)));
  }

  async function score() {
    const answer = await upload(`${base()}/score`, $("#char-score-file").files);
    const v = answer.verdict;
    const by = v.scorer ? ` by ${v.scorer}` : "";
    const value = v.score === null ? "" : ` (${v.score.toFixed(3)} against ${v.threshold})`;
    $("#char-verdict").textContent = `v${answer.version}: ${v.verdict}${by}${value}${v.reason ? ` · ${v.reason}` : ""}`;
  }

  onChoice("souls", (souls) => {
    fillSouls($("#char-soul"), souls);
    load().catch(problem);
  });
  $("#char-soul").addEventListener("change", () => load().catch(problem));
  $("#char-version").addEventListener("change", () => load(version()).catch(problem));
  $("#char-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("#char-create"), async () => load((await call("POST", base(), description())).version));
  });
  $("#char-upload").addEventListener("click", () => act($("#char-upload"), async () => {
    show(await upload(`${base()}/${version()}/references`, $("#char-files").files));
  }));
  $("#char-link").addEventListener("click", () => act($("#char-link"), async () => {
    show(await call("POST", `${base()}/${version()}/references`, { url: $("#char-url").value.trim() }));
  }));
  $("#char-sheet").addEventListener("click", () => act($("#char-sheet"), sheet));
  $("#char-lock").addEventListener("click", () => act($("#char-lock"), async () => {
    const locked = await call("POST", `${base()}/${version()}/lock`);
    await load(locked.version); // the version list says "locked" too
  }));
  $("#char-report").addEventListener("click", () => act($("#char-report"), report));
  $("#char-score").addEventListener("click", () => act($("#char-score"), score));
}
