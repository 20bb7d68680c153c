// Projects: make a project, make and generate its assets (watching the job), see an asset's
// versions side by side, start a new version, lock and unlock one, search the project.
import { call, followJob } from "../api.js";
import { $, busy, failureText, fillSelect, progressOf, say } from "../ui.js";

function figure(url, caption) {
  const item = Object.assign(document.createElement("figure"), { className: "pack-item" });
  const img = Object.assign(document.createElement("img"), { src: url, alt: caption });
  item.append(img, Object.assign(document.createElement("figcaption"), { textContent: caption }));
  return item;
}

export function projectsPanel() {
  const project = () => $("#proj-project").value;
  const asset = () => $("#proj-asset").value;
  const base = () => `/v1/projects/${encodeURIComponent(project())}`;
  const problem = (error) => say($("#proj-error"), error.message);

  // Opening the tab loads the list while a new project may be loading it again: the newest
  // load chooses the project, an earlier one that answers later is dropped.
  let projectLoads = 0;
  async function loadProjects(chosen) {
    const load = ++projectLoads;
    const page = await call("GET", "/v1/projects?limit=200");
    if (load !== projectLoads) return;
    fillSelect($("#proj-project"), page.projects.map((p) => new Option(`${p.name} (${p.status})`, p.project_id)));
    if (chosen) $("#proj-project").value = chosen;
    await loadAssets();
  }

  async function loadAssets(chosen, text) {
    if (!project()) return;
    const query = text ? { text, limit: 100 } : { limit: 100 };
    const found = await call("POST", `${base()}/assets:search`, query);
    fillSelect($("#proj-asset"), found.hits.map((h) => new Option(
      `${h.name} · ${h.asset_type} · v${h.version.version}${h.score === null ? "" : ` · ${h.score.toFixed(2)}`}`, h.asset_id)));
    if (chosen) $("#proj-asset").value = chosen;
    await showAsset();
  }

  async function showAsset() {
    if (!asset()) return $("#proj-versions").replaceChildren();
    const latest = await call("GET", `${base()}/assets/${asset()}`);
    const versions = await Promise.all(latest.versions.map((v) => call("GET", `${base()}/assets/${asset()}?version=${v.version}`)));
    $("#proj-state").textContent = `${latest.name} · ${latest.asset_type} · ${latest.versions.length} version(s)`;
    $("#proj-versions").replaceChildren(...versions.map(({ version: v }) => {
      const column = Object.assign(document.createElement("div"), { className: "proj-version" });
      const title = `v${v.version}${v.parent ? ` from v${v.parent}` : ""} · ${v.is_locked ? "locked" : "unlocked"}`;
      column.append(Object.assign(document.createElement("h3"), { textContent: title }));
      column.append(...v.roles.filter((role) => v.images[role]).map((role) => figure(v.images[role].url, role)));
      column.append(...Object.entries(v.derived_images || {}).map(([role, d]) => figure(d.thumbnail.url, `${role} (${d.label})`)));
      return column;
    }));
  }

  async function generated(accepted) {
    const job = await followJob(accepted.job.links, progressOf($("#proj-progress")));
    if (!["succeeded", "partial"].includes(job.status)) throw new Error(failureText(job));
    $("#proj-project").value = accepted.asset.project_id;  // the asset's, whatever is chosen now
    await loadAssets(accepted.asset.asset_id);
  }

  const act = (button, work) => busy(button, async () => {
    say($("#proj-error"), "");
    try {
      await work();
    } catch (error) {
      problem(error);
    }
  });

  $("#proj-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("#proj-create"), async () => {
      const made = await call("POST", "/v1/projects", { name: $("#proj-name").value.trim(), style_anchor_prompt: $("#proj-anchor").value.trim() });
      await loadProjects(made.project_id);
    });
  });
  $("#proj-asset-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("#proj-generate"), async () => {
      const tags = $("#proj-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
      const spec = { asset_type: $("#proj-type").value, name: $("#proj-asset-name").value.trim(), canonical_prompt: $("#proj-prompt").value.trim(), tags };
      await generated(await call("POST", `${base()}/assets:generate`, spec));
    });
  });
  $("#proj-new-version").addEventListener("click", () => act($("#proj-new-version"), async () => {
    const changes = { canonical_prompt: $("#proj-prompt").value.trim() || null, change_note: $("#proj-note").value.trim() };
    await generated(await call("POST", `${base()}/assets/${asset()}:version`, changes));
  }));
  for (const [button, action] of [["#proj-lock", "lock"], ["#proj-unlock", "unlock"]]) {
    $(button).addEventListener("click", () => act($(button), async () => {
      await call("POST", `${base()}/assets/${asset()}:${action}`);
      await showAsset();
    }));
  }
  $("#proj-search").addEventListener("click", () => act($("#proj-search"), () => loadAssets(undefined, $("#proj-query").value.trim())));
  $("#proj-project").addEventListener("change", () => loadAssets().catch(problem));
  $("#proj-asset").addEventListener("change", () => showAsset().catch(problem));
  return { show: () => loadProjects(project()).catch(problem) };
}
