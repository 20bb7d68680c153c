// Pack: 2 to 10 items of one soul, from a list of cues or one cue varied by one of the service's
// variations; each item shows as soon as it is delivered.
import { runJob } from "../api.js";
import { $, busy, failureText, fillSelect, fillSouls, onChoice, progressOf, say, userId } from "../ui.js";

export function packPanel() {
  function spec() {
    const common = { kind: "pack", soul_id: $("#pack-soul").value, user_id: userId() };
    const cues = $("#pack-cues").value.split("\n").map((c) => c.trim()).filter(Boolean);
    if (cues.length) return { ...common, cues };
    const vary = $("#pack-vary").value;
    return { ...common, cue: $("#pack-cue").value, count: Number($("#pack-count").value), ...(vary ? { vary } : {}) };
  }

  function tile(index, content) {
    const grid = $("#pack-items");
    let figure = grid.querySelector(`[data-index="${index}"]`);
    if (!figure) {
      figure = Object.assign(document.createElement("figure"), { className: "pack-item" });
      figure.dataset.index = index;
      grid.append(figure);
      [...grid.children].sort((a, b) => a.dataset.index - b.dataset.index).forEach((child) => grid.append(child));
    }
    figure.replaceChildren(...content);
  }

  function showItem(index, item) {
    const img = Object.assign(document.createElement("img"), { src: item.url, alt: `pack item ${index + 1}` });
    const caption = Object.assign(document.createElement("figcaption"), { textContent: `#${index + 1} · ${item.cache}` });
    tile(index, [img, caption]);
  }

  function showFailed(failed) {
    const note = Object.assign(document.createElement("p"), {
      className: "pack-failed",
      textContent: `#${failed.index + 1} failed: ${failed.error.detail}`,
    });
    tile(failed.index, [note]);
  }

  async function makePack() {
    say($("#pack-error"), "");
    $("#pack-items").replaceChildren();
    try {
      const job = await runJob(spec(), { ...progressOf($("#pack-progress")), onItem: showItem });
      job.result?.items.forEach((item, index) => item && showItem(index, item));
      (job.result?.failed || []).forEach(showFailed);
      if (!["succeeded", "partial"].includes(job.status)) throw new Error(failureText(job));
    } catch (error) {
      say($("#pack-error"), error.message);
    }
  }

  onChoice("souls", (souls) => fillSouls($("#pack-soul"), souls));
  onChoice("info", (info) => {
    const nothing = new Option("nothing", "");
    fillSelect($("#pack-vary"), [nothing, ...info.variations.map((name) => new Option(name, name))]);
  });
  $("#pack-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#pack-go"), makePack);
  });
}
