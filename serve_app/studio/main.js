// The studio page put together: who is asking, the panels, the tabs, then the service's choices.
import { useKey } from "./api.js";
import { catalogPanel } from "./panels/catalog.js";
import { charactersPanel } from "./panels/characters.js";
import { generatePanel } from "./panels/generate.js";
import { packPanel } from "./panels/pack.js";
import { printPanel } from "./panels/print.js";
import { projectsPanel } from "./panels/projects.js";
import { queuePanel } from "./panels/queue.js";
import { selfiePanel } from "./panels/selfie.js";
import { storyboardPanel } from "./panels/storyboard.js";
import { stylesPanel } from "./panels/styles.js";
import { $, loadChoices, setUpTabs } from "./ui.js";

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

generatePanel();
printPanel();
selfiePanel();
packPanel();
stylesPanel({ reloadChoices: loadChoices });
catalogPanel();
charactersPanel();
const shown = { queue: queuePanel(), projects: projectsPanel(), storyboard: storyboardPanel() };
setUpTabs($('[role="tablist"]'), (name) => shown[name]?.show());
loadChoices();
