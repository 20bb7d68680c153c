// Catalog: a soul's prompt keys, a page at a time ("More keys" follows next_after), and a key's
// variants with their thumbnails.
import { call } from "../api.js";
import { $, fillSouls, onChoice, say } from "../ui.js";

const PAGE = 100;

function keyItem(key, open) {
  const li = document.createElement("li");
  const button = Object.assign(document.createElement("button"), {
    type: "button",
    className: "key",
    textContent: `${key.key_norm} (${key.variants} variant${key.variants === 1 ? "" : "s"})`,
  });
  button.addEventListener("click", () => open(key.pk_id));
  li.append(button);
  return li;
}

function variantFigure(variant) {
  const figure = document.createElement("figure");
  const img = Object.assign(document.createElement("img"), { src: variant.cover_url, className: "thumb", alt: variant.variant_id });
  const caption = Object.assign(document.createElement("figcaption"), {
    textContent: `seed ${variant.seed} · ${new Date(variant.created_at).toLocaleString()}`,
  });
  const link = Object.assign(document.createElement("a"), { href: variant.url, target: "_blank" });
  link.append(img);
  figure.append(link, caption);
  return figure;
}

export function catalogPanel() {
  let soulId = "";
  let nextAfter = null;

  async function showVariants(pkId) {
    try {
      const variants = await call("GET", `/keys/${encodeURIComponent(pkId)}/variants`);
      $("#catalog-variants").replaceChildren(...variants.map(variantFigure));
    } catch (error) {
      say($("#catalog-error"), error.message);
    }
  }

  // The next page of keys after the ones shown (the first page when `after` is empty).
  async function loadKeys(after) {
    say($("#catalog-error"), "");
    try {
      const query = new URLSearchParams({ soul_id: soulId, limit: String(PAGE), after });
      const page = await call("GET", `/keys?${query}`);
      $("#catalog-keys").append(...page.keys.map((key) => keyItem(key, showVariants)));
      nextAfter = page.next_after;
      if (!after && !page.keys.length) say($("#catalog-error"), "This soul has no prompt keys yet: generate something first.");
    } catch (error) {
      say($("#catalog-error"), error.message);
    }
    $("#catalog-more").hidden = !nextAfter;
  }

  onChoice("souls", (souls) => fillSouls($("#catalog-soul"), souls));
  $("#catalog-form").addEventListener("submit", (event) => {
    event.preventDefault();
    soulId = $("#catalog-soul").value;
    $("#catalog-keys").replaceChildren();
    $("#catalog-variants").replaceChildren();
    loadKeys("");
  });
  $("#catalog-more").addEventListener("click", () => nextAfter && loadKeys(nextAfter));
}
