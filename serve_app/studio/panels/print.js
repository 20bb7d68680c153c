// Print: a print-ready file of the variant the generate panel shows (its "studio:variant" event),
// made by POST /variants/{id}/print and followed as a job to the file's link and size in pixels.
import { call, followJob } from "../api.js";
import { $, busy, failureText, onChoice, progressOf, say, showFieldErrors } from "../ui.js";

export function printPanel() {
  const form = $("#print-form");
  let variantId = null;

  async function print() {
    say($("#print-error"), "");
    showFieldErrors(form, {});
    $("#print-result").hidden = true;
    const options = {
      size: $("#print-size").value,
      fit: $("#print-fit").value,
      background: $("#print-background").value,
      format: $("#print-format").value,
    };
    try {
      const accepted = await call("POST", `/variants/${encodeURIComponent(variantId)}/print`, options);
      const job = await followJob(accepted.links, progressOf($("#print-progress")));
      if (job.status !== "succeeded") throw new Error(failureText(job));
      const [made] = job.result.prints;
      const link = $("#print-link");
      link.href = made.url;
      link.textContent = `${made.size} ${made.format.toUpperCase()}`;
      $("#print-reused").textContent = job.result.reused ? " (made before)" : "";
      $("#print-result").hidden = false;
    } catch (error) {
      showFieldErrors(form, error.fields || {});
      say($("#print-error"), error.message);
    }
  }

  onChoice("variant", (answer) => {
    variantId = answer.variant_id;
    form.hidden = false;
    $("#print-progress").hidden = true;
    $("#print-result").hidden = true;
    say($("#print-error"), "");
    showFieldErrors(form, {});
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#print-go"), print);
  });
}
