// Styles: a soul's style in a form; saving posts it, and the service's field errors show next to
// the fields they name.
import { call } from "../api.js";
import { $, busy, fillSouls, onChoice, say, showFieldErrors } from "../ui.js";

const LISTS = ["lora_ids", "style_tags", "negatives"];
const OBJECTS = ["palette", "extra"];

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

// reloadChoices: asks the service for its choices again, so every panel sees the saved style.
export function stylesPanel({ reloadChoices }) {
  const form = $("#style-form");
  let souls = [];

  function fill() {
    const soul = souls.find((s) => s.soul_id === $("#style-soul").value);
    if (!soul) return;
    $("#style-base_model_ref").value = soul.base_model_ref;
    $("#style-motion_module").value = soul.motion_module || "";
    for (const name of LISTS) $(`#style-${name}`).value = soul[name].join(", ");
    for (const name of OBJECTS) $(`#style-${name}`).value = JSON.stringify(soul[name]);
    showFieldErrors(form, {});
  }

  async function save() {
    say($("#style-message"), "");
    say($("#style-error"), "");
    const { style, problems } = readStyle();
    showFieldErrors(form, problems);
    if (Object.keys(problems).length) return;
    try {
      const saved = await call("POST", "/style", style);
      say($("#style-message"), `Saved the style of ${saved.soul_id}.`);
      await reloadChoices();
    } catch (error) {
      showFieldErrors(form, error.fields || {});
      say($("#style-error"), error.message);
    }
  }

  onChoice("souls", (answer) => {
    souls = answer;
    fillSouls($("#style-soul"), souls);
    fill();
  });
  $("#style-soul").addEventListener("change", fill);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#style-save"), save);
  });
}
