// Storyboard: a project's script compiled into scenes (the names it cannot resolve listed with
// where they are), each scene rendered (watching the job), each frame shown with its status and
// consistency report, approved, rejected or rolled back; the scenes reordered; the approved
// frames exported as a PDF sheet or an image sequence (watching the job, linking the file).
import { call, followJob } from "../api.js";
import { $, busy, failureText, fillSelect, progressOf, say, showFieldErrors } from "../ui.js";

const el = (tag, props = {}, ...children) => {
  const made = Object.assign(document.createElement(tag), props);
  made.append(...children);
  return made;
};

function reportText(report) {
  if (!report) return "no consistency report yet";
  const checks = report.checks.map((c) => {
    const who = c.name ? ` ${c.name}` : "";
    const score = typeof c.score === "number" ? ` ${c.score.toFixed(2)}/${c.threshold}` : "";
    return `${c.check}${who}: ${c.passed ? "pass" : "FAIL"}${c.verdict ? ` (${c.verdict}${score})` : ""}`;
  });
  return `${report.passed ? "the gate: every check passed" : "the gate: a check failed"}\n${checks.join("\n")}`;
}

export function storyboardPanel() {
  const project = () => $("#sb-project").value;
  const base = () => `/v1/projects/${encodeURIComponent(project())}`;
  const problem = (error) => say($("#sb-error"), error.message);
  let order = []; // the scene ids as the timeline shows them
  let script = null; // the last script sent: { project, text, id }, compiled again when unchanged

  async function loadProjects() {
    const page = await call("GET", "/v1/projects?limit=200");
    fillSelect($("#sb-project"), page.projects.map((p) => new Option(`${p.name} (${p.status})`, p.project_id)));
    await loadTimeline();
  }

  async function loadTimeline(answer) {
    if (!project()) return $("#sb-scenes").replaceChildren();
    const line = answer || (await call("GET", `${base()}/timeline`));
    order = line.scenes.map((s) => s.scene_id);
    $("#sb-scenes").replaceChildren(...line.scenes.map((scene, i) => {
      const item = el("li", { className: "sb-scene" },
        el("h3", { textContent: scene.heading }),
        el("div", { className: "buttons" },
          button("Render a frame", "render", () => render(scene.scene_id)),
          button("Move up", "up", () => move(i, -1), i === 0),
          button("Move down", "down", () => move(i, 1), i === line.scenes.length - 1)),
        el("div", { className: "grid" }, ...scene.frames.filter((f) => f.shown).map(frameCard)));
      item.dataset.sceneId = scene.scene_id;
      return item;
    }));
  }

  function frameCard(frame) {
    const v = frame.shown;
    const card = el("figure", { className: "sb-frame" });
    card.dataset.frameId = frame.frame_id;
    if (v.url) card.append(el("img", { src: v.url, alt: `frame ${frame.frame_index}, version ${v.render_version}` }));
    card.append(
      el("figcaption", { className: "sb-status", textContent: `frame ${frame.frame_index} · v${v.render_version} · ${v.status}` }),
      el("pre", { className: "sb-report", textContent: reportText(v.consistency_report) }),
      el("div", { className: "buttons" }, ...["approve", "reject", "rollback"].map((action) => button(
        action[0].toUpperCase() + action.slice(1), action, () => decide(frame.frame_id, action)))),
    );
    return card;
  }

  function button(text, className, work, disabled = false) {
    const made = el("button", { type: "button", className, textContent: text, disabled });
    made.addEventListener("click", () => act(made, work));
    return made;
  }

  const act = (target, work) => busy(target, async () => {
    say($("#sb-error"), "");
    try {
      await work();
    } catch (error) {
      problem(error);
    }
  });

  async function finished(accepted, box) {
    const job = await followJob(accepted.links, progressOf(box));
    if (!["succeeded", "partial"].includes(job.status)) throw new Error(failureText(job));
    return job;
  }

  async function render(sceneId) {
    await finished(await call("POST", `${base()}/scenes/${sceneId}/renders`, { frames: 1 }), $("#sb-progress"));
    await loadTimeline();
  }

  async function move(index, by) {
    const next = [...order];
    [next[index], next[index + by]] = [next[index + by], next[index]];
    await loadTimeline(await call("POST", `${base()}/timeline:reorder`, { scene_ids: next }));
  }

  async function decide(frameId, action) {
    const body = action === "rollback" ? undefined : { note: $("#sb-note").value.trim() };
    await call("POST", `${base()}/frames/${frameId}:${action}`, body);
    await loadTimeline();
  }

  async function compile() {
    const form = $("#sb-script-form");
    const text = $("#sb-script").value;
    showFieldErrors(form, {});
    $("#sb-unresolved").replaceChildren();
    try {
      if (script?.project !== project() || script.text !== text) {
        const made = await call("POST", `${base()}/scripts`, { title: $("#sb-title").value.trim(), raw_text: text });
        script = { project: project(), text, id: made.script_id };
      }
      await call("POST", `${base()}/scripts/${script.id}:compile`);
    } catch (error) {
      // A compile's 422 lists each unresolved name with where it is; other 4xx name a field.
      const listed = (error.errors || []).filter((e) => e.name || e.line);
      showFieldErrors(form, listed.length ? {} : error.fields || {});
      $("#sb-unresolved").replaceChildren(...listed.map((e) => el("li", {
        textContent: `${e.name ? `${e.name}: ` : ""}${e.msg} (${e.loc.slice(1).join(", ")})`,
      })));
      throw error;
    }
    await loadTimeline();
  }

  async function exported(kind, body) {
    $("#sb-exported").hidden = true;
    const job = await finished(await call("POST", `${base()}/exports/${kind}`, body), $("#sb-export-progress"));
    const link = $("#sb-export-link");
    link.href = job.result.url;
    link.textContent = kind === "pdf" ? "the storyboard PDF" : "the image sequence (zip)";
    $("#sb-exported").hidden = false;
  }

  $("#sb-script-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act($("#sb-compile"), compile);
  });
  $("#sb-export-pdf").addEventListener("click", () => act($("#sb-export-pdf"),
    () => exported("pdf", { per_page: Number($("#sb-per-page").value) })));
  $("#sb-export-zip").addEventListener("click", () => act($("#sb-export-zip"), () => exported("image-sequence")));
  $("#sb-project").addEventListener("change", () => loadTimeline().catch(problem));
  return { show: () => loadProjects().catch(problem) };
}
