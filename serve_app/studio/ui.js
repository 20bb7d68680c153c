// The studio page: every panel is a few calls of the API (api.js), shown in words.
import { call, runJob, useKey } from "./api.js";

const $ = (selector) => document.querySelector(selector);
const STAGES = {
  queued: "waiting in the queue",
  starting: "starting",
  lookup: "looking in the catalog",
  render: "rendering",
  animate: "animating",
  record: "saving",
  retrying: "retrying after a hiccup",
};

// ---- who is asking --------------------------------------------------------------------------
const keyField = $("#api-key");
const userField = $("#user-id");
keyField.value = sessionStorage.getItem("soul.key") || "";
userField.value = localStorage.getItem("soul.user") || `visitor-${Math.random().toString(36).slice(2, 8)}`;
localStorage.setItem("soul.user", userField.value);
keyField.addEventListener("change", () => {
  sessionStorage.setItem("soul.key", keyField.value);
  loadChoices();
});
userField.addEventListener("change", () => localStorage.setItem("soul.user", userField.value.trim()));
useKey(() => keyField.value);
const userId = () => userField.value.trim();

// ---- tabs -----------------------------------------------------------------------------------
for (const tab of document.querySelectorAll("nav [data-tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("nav [data-tab]")) {
      other.setAttribute("aria-selected", String(other === tab));
      $(`#tab-${other.dataset.tab}`).hidden = other !== tab;
    }
    if (tab.dataset.tab === "queue") refreshQueue();
  });
}

// ---- showing things -------------------------------------------------------------------------
function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

function progressOf(box) {
  const bar = box.querySelector("progress");
  const stage = box.querySelector(".stage");
  return (p) => {
    box.hidden = false;
    const steps = p.step && p.steps ? ` ${p.step}/${p.steps}` : "";
    const item = p.total > 1 ? ` · ${p.done} of ${p.total} done` : "";
    const fraction = p.step && p.steps ? p.step / p.steps : 0;
    bar.value = p.total ? Math.min(1, (p.done + (p.done < p.total ? fraction : 0)) / p.total) : 0;
    stage.textContent = `${STAGES[p.stage] || p.stage}${steps}${item}`;
  };
}

function showMedia(image, video, answer) {
  const isVideo = answer.format === "mp4";
  image.hidden = isVideo;
  video.hidden = !isVideo;
  if (isVideo) video.src = answer.url;
  else image.src = answer.url;
}

function failureText(job) {
  if (job.status === "cancelled") return "The job was cancelled.";
  return job.error ? `It failed: ${job.error.detail}` : `It ended ${job.status}.`;
}

async function busy(button, work) {
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

// ---- souls ----------------------------------------------------------------------------------
let souls = [];

async function loadSouls() {
  try {
    souls = await call("GET", "/style");
    say($("#error"), "");
  } catch (error) {
    say($("#error"), `Could not load the souls: ${error.message}`);
    return;
  }
  for (const picker of document.querySelectorAll(".soul-picker")) {
    const chosen = picker.value;
    picker.replaceChildren(
      ...souls.map((s) => new Option(`${s.soul_id} — ${s.style_tags.join(", ")}`, s.soul_id)),
    );
    if (souls.some((s) => s.soul_id === chosen)) picker.value = chosen;
  }
  showSoul();
  fillStyle();
}

function showSoul() {
  const soul = souls.find((s) => s.soul_id === $("#soul").value);
  const info = $("#soul-info");
  info.replaceChildren();
  if (!soul) return;
  for (const tag of soul.style_tags) {
    const span = document.createElement("span");
    span.className = "tag";
    span.textContent = tag;
    info.append(span);
  }
  for (const color of soul.palette.colors || []) {
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    swatch.title = color;
    info.append(swatch);
  }
  if (soul.palette.hint) info.append(` ${soul.palette.hint}`);
}
$("#soul").addEventListener("change", showSoul);

// ---- generate -------------------------------------------------------------------------------
let lastImage = null;

async function generate(spec) {
  say($("#gen-error"), "");
  $("#another").disabled = true;
  try {
    const job = await runJob(spec, { onProgress: progressOf($("#gen-progress")) });
    if (job.status !== "succeeded") throw new Error(failureText(job));
    const answer = job.result;
    showMedia($("#gen-image"), $("#gen-video"), answer);
    $("#gen-variant").textContent = answer.variant_id;
    $("#gen-cache").textContent = answer.cache === "hit" ? "cache hit" : "new render (miss)";
    $("#gen-result").hidden = false;
    lastImage = spec;
  } catch (error) {
    say($("#gen-error"), error.message);
  } finally {
    $("#another").disabled = lastImage === null;
  }
}

$("#generate-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const spec = {
    kind: "image",
    soul_id: $("#soul").value,
    cue: $("#cue").value,
    user_id: userId(),
    format: $("#format").value,
  };
  busy($("#generate"), () => generate(spec));
});
$("#another").addEventListener("click", () => {
  if (lastImage) busy($("#generate"), () => generate({ ...lastImage, user_id: userId() }));
});

// ---- selfies --------------------------------------------------------------------------------
async function loadCities() {
  try {
    const places = await call("GET", "/cities");
    $("#city").replaceChildren(...places.cities.map((c) => new Option(c.display_name, c.city_key)));
    $("#mood").replaceChildren(...places.moods.map((m) => new Option(m, m)));
    say($("#selfie-error"), "");
  } catch (error) {
    say($("#selfie-error"), `Could not load the cities: ${error.message}`);
  }
}

$("#selfie-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("#selfie-go"), async () => {
    say($("#selfie-error"), "");
    const spec = {
      kind: "selfie",
      soul_id: $("#selfie-soul").value,
      city_key: $("#city").value,
      mood: $("#mood").value,
      user_id: userId(),
    };
    try {
      const job = await runJob(spec, { onProgress: progressOf($("#selfie-progress")) });
      if (job.status !== "succeeded") throw new Error(failureText(job));
      $("#selfie-image").src = job.result.url;
      const place = `${job.result.landmark_key.replaceAll("_", " ")}, ${job.result.angle.replaceAll("_", " ")}`;
      $("#selfie-place").textContent = `${place} · variant ${job.result.variant_id}`;
      $("#selfie-result").hidden = false;
    } catch (error) {
      say($("#selfie-error"), error.message);
    }
  });
});

// ---- packs ----------------------------------------------------------------------------------
function packSpec() {
  const spec = { kind: "pack", soul_id: $("#pack-soul").value, user_id: userId() };
  const cues = $("#pack-cues").value.split("\n").map((c) => c.trim()).filter(Boolean);
  if (cues.length) return { ...spec, cues };
  const vary = $("#pack-vary").value;
  return { ...spec, cue: $("#pack-cue").value, count: Number($("#pack-count").value), ...(vary ? { vary } : {}) };
}

function packTile(index, content) {
  const grid = $("#pack-items");
  let tile = grid.querySelector(`[data-index="${index}"]`);
  if (!tile) {
    tile = document.createElement("figure");
    tile.className = "pack-item";
    tile.dataset.index = index;
    grid.append(tile);
    [...grid.children]
      .sort((a, b) => a.dataset.index - b.dataset.index)
      .forEach((child) => grid.append(child));
  }
  tile.replaceChildren(...content);
}

function packImage(index, item) {
  const img = document.createElement("img");
  img.src = item.url;
  img.alt = `pack item ${index + 1}`;
  const caption = document.createElement("figcaption");
  caption.textContent = `#${index + 1} · ${item.cache}`;
  packTile(index, [img, caption]);
}

$("#pack-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("#pack-go"), async () => {
    say($("#pack-error"), "");
    $("#pack-items").replaceChildren();
    try {
      const job = await runJob(packSpec(), {
        onProgress: progressOf($("#pack-progress")),
        onItem: packImage,
      });
      job.result?.items.forEach((item, index) => item && packImage(index, item));
      for (const failed of job.result?.failed || []) {
        const note = document.createElement("p");
        note.className = "pack-failed";
        note.textContent = `#${failed.index + 1} failed: ${failed.error.detail}`;
        packTile(failed.index, [note]);
      }
      if (!["succeeded", "partial"].includes(job.status)) throw new Error(failureText(job));
    } catch (error) {
      say($("#pack-error"), error.message);
    }
  });
});

// ---- the queue ------------------------------------------------------------------------------
let queueTimer = null;

function cell(text, tag = "td") {
  const td = document.createElement(tag);
  td.textContent = text;
  return td;
}

async function refreshQueue() {
  clearTimeout(queueTimer);
  try {
    const [page, stats] = await Promise.all([call("GET", "/jobs?limit=25"), call("GET", "/jobs/stats")]);
    say($("#queue-error"), "");
    $("#queue-list").replaceChildren(
      ...page.jobs.map((job) => {
        const row = document.createElement("tr");
        row.dataset.jobId = job.job_id;
        const id = document.createElement("td");
        id.append(Object.assign(document.createElement("code"), { textContent: job.job_id.slice(-8) }));
        const status = cell(job.cancel_requested && job.status === "running" ? "stopping" : job.status);
        status.className = "status";
        const action = document.createElement("td");
        if (["queued", "running"].includes(job.status)) {
          const cancel = Object.assign(document.createElement("button"), { className: "cancel", textContent: "Cancel" });
          cancel.addEventListener("click", () => cancelJob(job.job_id, cancel));
          action.append(cancel);
        }
        const progress = `${job.progress.done}/${job.progress.total} ${STAGES[job.progress.stage] || job.progress.stage}`;
        row.append(id, cell(job.kind), status, cell(progress), cell(new Date(job.created_at).toLocaleTimeString()), action);
        return row;
      }),
    );
    $("#queue-stats").textContent = statsText(stats);
  } catch (error) {
    say($("#queue-error"), `Could not load the queue: ${error.message}`);
  }
  if (!$("#tab-queue").hidden) queueTimer = setTimeout(refreshQueue, 2000);
}

function statsText(stats) {
  const jobs = (byKind) =>
    Object.entries(byKind)
      .map(([kind, byPriority]) => `${kind} ${Object.entries(byPriority).map(([p, n]) => `${n} ${p}`).join(", ")}`)
      .join("; ") || "none";
  const seconds = (value) => (value == null ? "–" : `${value.toFixed(1)} s`);
  const window = `the last ${Math.round(stats.window_s / 60)} min`;
  return [
    `Waiting: ${jobs(stats.queued)}`,
    `Running: ${jobs(stats.running)}`,
    `Oldest waiting: ${seconds(stats.oldest_queued_s)}`,
    `Wait p50 / p95 over ${window}: ${seconds(stats.wait_s.p50)} / ${seconds(stats.wait_s.p95)}`,
    `Run p50 / p95 over ${window}: ${seconds(stats.run_s.p50)} / ${seconds(stats.run_s.p95)}`,
    `Workers alive: ${stats.workers_alive}`,
  ].join("\n");
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    await call("POST", `/jobs/${jobId}/cancel`);
  } catch (error) {
    say($("#queue-error"), `Could not cancel: ${error.message}`);
  }
  refreshQueue();
}
$("#queue-refresh").addEventListener("click", refreshQueue);

// ---- styles ---------------------------------------------------------------------------------
const LISTS = ["lora_ids", "style_tags", "negatives"];
const OBJECTS = ["palette", "extra"];

function fillStyle() {
  const soul = souls.find((s) => s.soul_id === $("#style-soul").value);
  if (!soul) return;
  $("#style-base_model_ref").value = soul.base_model_ref;
  $("#style-motion_module").value = soul.motion_module || "";
  for (const name of LISTS) $(`#style-${name}`).value = soul[name].join(", ");
  for (const name of OBJECTS) $(`#style-${name}`).value = JSON.stringify(soul[name]);
  showFieldErrors({});
}
$("#style-soul").addEventListener("change", fillStyle);

function showFieldErrors(fields) {
  for (const slot of document.querySelectorAll("#style-form .field-error")) {
    slot.textContent = fields[slot.dataset.field] || "";
  }
}

function readStyle() {
  const style = {
    soul_id: $("#style-soul").value,
    base_model_ref: $("#style-base_model_ref").value.trim(),
    motion_module: $("#style-motion_module").value.trim() || null,
  };
  for (const name of LISTS) {
    style[name] = $(`#style-${name}`).value.split(",").map((v) => v.trim()).filter(Boolean);
  }
  const problems = {};
  for (const name of OBJECTS) {
    try {
      style[name] = JSON.parse($(`#style-${name}`).value || "{}");
    } catch {
      problems[name] = "not valid JSON";
    }
  }
  return { style, problems };
}

$("#style-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("#style-save"), async () => {
    say($("#style-message"), "");
    say($("#style-error"), "");
    const { style, problems } = readStyle();
    showFieldErrors(problems);
    if (Object.keys(problems).length) return;
    try {
      const saved = await call("POST", "/style", style);
      say($("#style-message"), `Saved the style of ${saved.soul_id}.`);
      await loadSouls();
    } catch (error) {
      showFieldErrors(error.fields || {});
      say($("#style-error"), error.message);
    }
  });
});

// ---- the catalog ----------------------------------------------------------------------------
$("#catalog-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  say($("#catalog-error"), "");
  $("#catalog-variants").replaceChildren();
  try {
    const page = await call("GET", `/keys?soul_id=${encodeURIComponent($("#catalog-soul").value)}&limit=100`);
    $("#catalog-keys").replaceChildren(
      ...page.keys.map((key) => {
        const li = document.createElement("li");
        const open = Object.assign(document.createElement("button"), {
          type: "button",
          className: "key",
          textContent: `${key.key_norm} (${key.variants} variant${key.variants === 1 ? "" : "s"})`,
        });
        open.addEventListener("click", () => showVariants(key.pk_id));
        li.append(open);
        return li;
      }),
    );
    if (!page.keys.length) say($("#catalog-error"), "This soul has no prompt keys yet: generate something first.");
  } catch (error) {
    say($("#catalog-error"), error.message);
  }
});

async function showVariants(pkId) {
  try {
    const variants = await call("GET", `/keys/${encodeURIComponent(pkId)}/variants`);
    $("#catalog-variants").replaceChildren(
      ...variants.map((v) => {
        const figure = document.createElement("figure");
        const img = Object.assign(document.createElement("img"), { src: v.cover_url, className: "thumb", alt: v.variant_id });
        const caption = document.createElement("figcaption");
        caption.textContent = `seed ${v.seed} · ${new Date(v.created_at).toLocaleString()}`;
        const link = Object.assign(document.createElement("a"), { href: v.url, target: "_blank" });
        link.append(img);
        figure.append(link, caption);
        return figure;
      }),
    );
  } catch (error) {
    say($("#catalog-error"), error.message);
  }
}

function loadChoices() {
  loadSouls();
  loadCities();
}

loadChoices();
