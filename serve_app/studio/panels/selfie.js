// Selfie: a soul somewhere in one of the service's cities, in one of its moods.
import { runJob } from "../api.js";
import { $, busy, failureText, fillSelect, fillSouls, onChoice, progressOf, say, userId } from "../ui.js";

export function selfiePanel() {
  async function takeSelfie() {
    say($("#selfie-error"), "");
    const spec = {
      kind: "selfie",
      soul_id: $("#selfie-soul").value,
      city_key: $("#city").value,
      mood: $("#mood").value,
      user_id: userId(),
    };
    try {
      const job = await runJob(spec, progressOf($("#selfie-progress")));
      if (job.status !== "succeeded") throw new Error(failureText(job));
      $("#selfie-image").src = job.result.url;
      const place = `${job.result.landmark_key.replaceAll("_", " ")}, ${job.result.angle.replaceAll("_", " ")}`;
      $("#selfie-place").textContent = `${place} · variant ${job.result.variant_id}`;
      $("#selfie-result").hidden = false;
    } catch (error) {
      say($("#selfie-error"), error.message);
    }
  }

  onChoice("souls", (souls) => fillSouls($("#selfie-soul"), souls));
  onChoice("places", (places) => {
    fillSelect($("#city"), places.cities.map((c) => new Option(c.display_name, c.city_key)));
    fillSelect($("#mood"), places.moods.map((m) => new Option(m, m)));
  });
  $("#selfie-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("#selfie-go"), takeSelfie);
  });
}
