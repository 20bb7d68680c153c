// Queue: the client's latest jobs (refreshed every 2 s while the tab is shown), a cancel button
// for each unfinished one, and the queue's numbers.
import { call } from "../api.js";
import { $, STAGES, say } from "../ui.js";

const REFRESH_MS = 2000;

function cell(text) {
  return Object.assign(document.createElement("td"), { textContent: text });
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

export function queuePanel() {
  let timer = null;

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.job_id;
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
    tr.append(id, cell(job.kind), status, cell(progress), cell(new Date(job.created_at).toLocaleTimeString()), action);
    return tr;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [page, stats] = await Promise.all([call("GET", "/jobs?limit=25"), call("GET", "/jobs/stats")]);
      say($("#queue-error"), "");
      $("#queue-list").replaceChildren(...page.jobs.map(row));
      $("#queue-stats").textContent = statsText(stats);
    } catch (error) {
      say($("#queue-error"), `Could not load the queue: ${error.message}`);
    }
    if (!$("#tab-queue").hidden) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function cancelJob(jobId, button) {
    button.disabled = true;
    try {
      await call("POST", `/jobs/${jobId}/cancel`);
    } catch (error) {
      say($("#queue-error"), `Could not cancel: ${error.message}`);
    }
    refresh();
  }

  $("#queue-refresh").addEventListener("click", refresh);
  return { show: refresh };
}
