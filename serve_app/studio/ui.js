// What the panels share: showing things in words, the tabs, who is asking, and the choices the
// service offers. No state lives here: each panel keeps its own (panels/*.js), and main.js
// puts them together.
import { call } from "./api.js";

export const $ = (selector) => document.querySelector(selector);

export const STAGES = {
  queued: "waiting in the queue",
  starting: "looking in the catalog",
  render: "rendering",
  animate: "animating",
  record: "saving",
  load: "loading the still",
  upscale: "upscaling",
  finish: "framing, finishing and checking the file",
  store: "storing the print",
  retrying: "retrying after a hiccup",
  reconnecting: "the stream dropped: picking the job up again",
};

export function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

export function userId() {
  return $("#user-id").value.trim();
}

// A progress box's updater, and onResume to tell that a dropped stream is being picked up.
export function progressOf(box) {
  const bar = box.querySelector("progress");
  const stage = box.querySelector(".stage");
  const onProgress = (p) => {
    box.hidden = false;
    const steps = p.step && p.steps ? ` ${p.step}/${p.steps}` : "";
    const item = p.total > 1 ? ` · ${p.done} of ${p.total} done` : "";
    const fraction = p.step && p.steps ? p.step / p.steps : 0;
    bar.value = p.total ? Math.min(1, (p.done + (p.done < p.total ? fraction : 0)) / p.total) : 0;
    stage.textContent = `${STAGES[p.stage] || p.stage}${steps}${item}`;
  };
  const onResume = () => {
    stage.textContent = STAGES.reconnecting;
  };
  return { onProgress, onResume };
}

export function showMedia(image, video, answer) {
  const isVideo = answer.format === "mp4";
  image.hidden = isVideo;
  video.hidden = !isVideo;
  if (isVideo) video.src = answer.url;
  else image.src = answer.url;
}

// The service's field errors (ApiError.fields) in the form's .field-error slots, by data-field.
export function showFieldErrors(form, fields) {
  for (const slot of form.querySelectorAll(".field-error")) {
    slot.textContent = fields[slot.dataset.field] || "";
  }
}

export function failureText(job) {
  if (job.status === "cancelled") return "The job was cancelled.";
  return job.error ? `It failed: ${job.error.detail}` : `It ended ${job.status}.`;
}

export async function busy(button, work) {
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

export function fillSelect(select, options) {
  const chosen = select.value;
  select.replaceChildren(...options);
  if (options.some((option) => option.value === chosen)) select.value = chosen;
}

export function fillSouls(picker, souls) {
  fillSelect(picker, souls.map((s) => new Option(`${s.soul_id} — ${s.style_tags.join(", ")}`, s.soul_id)));
}

// ---- tabs: click, or Left/Right/Home/End on the tab list (WAI-ARIA tabs, automatic activation)
export function setUpTabs(tablist, onShow) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const show = (tab) => {
    for (const other of tabs) {
      const chosen = other === tab;
      other.setAttribute("aria-selected", String(chosen));
      other.tabIndex = chosen ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
    }
    onShow(tab.dataset.tab);
  };
  const KEYS = {
    ArrowRight: (i) => (i + 1) % tabs.length,
    ArrowLeft: (i) => (i - 1 + tabs.length) % tabs.length,
    Home: () => 0,
    End: () => tabs.length - 1,
  };
  for (const tab of tabs) tab.addEventListener("click", () => show(tab));
  tablist.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0 || !KEYS[event.key]) return;
    event.preventDefault();
    const next = tabs[KEYS[event.key](index)];
    next.focus();
    show(next);
  });
  show(tabs.find((tab) => tab.getAttribute("aria-selected") === "true") || tabs[0]);
}

// ---- the choices the service offers ------------------------------------------------------------
// Each answer goes to the panels as a document event ("studio:souls", "studio:info",
// "studio:places"), so that every panel keeps its own copy; "studio:variant" is the variant the
// generate panel shows.
export function onChoice(name, listener) {
  document.addEventListener(`studio:${name}`, (event) => listener(event.detail));
}

// Resolves with the error where the service did not answer, else null.
async function offer(name, path) {
  try {
    const detail = await call("GET", path);
    document.dispatchEvent(new CustomEvent(`studio:${name}`, { detail }));
    return null;
  } catch (error) {
    return error;
  }
}

export async function loadChoices() {
  const [souls, info, places] = await Promise.all([
    offer("souls", "/style"),
    offer("info", "/info"),
    offer("places", "/cities"),
  ]);
  const problem = souls ? `the souls: ${souls.message}` : info && `the formats: ${info.message}`;
  say($("#error"), problem && `Could not load ${problem}`);
  say($("#selfie-error"), places && `Could not load the cities: ${places.message}`);
}
