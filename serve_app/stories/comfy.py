"""A ``PipelineDescription`` in ComfyUI's API prompt format (what ``POST /prompt`` takes): node
id → ``{"class_type", "inputs", "_meta"}``, an input being a value or ``[node_id, output]``.

Core nodes throughout, except the IP-Adapter ones (``IPAdapterUnifiedLoader``,
``IPAdapterAdvanced`` from ComfyUI_IPAdapter_plus). A character's region is drawn with core
nodes (a ``SolidMask`` of 0, a ``SolidMask`` of 1 the box's size, ``MaskComposite`` add at the
box), so the export needs no mask files; reference images are named as ``LoadImage`` files.
"""

from __future__ import annotations

from typing import Any

from serve_app.stories.pipeline import PipelineDescription, Step

# Each op: its node class, and the index of each named output.
NODES: dict[str, tuple[str, dict[str, int]]] = {
    "load_model": ("CheckpointLoaderSimple", {"model": 0, "clip": 1, "vae": 2}),
    "encode": ("CLIPTextEncode", {"conditioning": 0}),
    "mask": ("MaskComposite", {"mask": 0}),
    "ip_adapter": ("IPAdapterAdvanced", {"model": 0}),
    "empty_latent": ("EmptyLatentImage", {"latent": 0}),
    "load_image": ("ImageScale", {"image": 0}),
    "encode_image": ("VAEEncode", {"latent": 0}),
    "sample": ("KSampler", {"latent": 0}),
    "decode": ("VAEDecode", {"image": 0}),
    "save": ("SaveImage", {}),
}
IP_PRESET = "PLUS (high strength)"


def node(class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def to_comfy(description: PipelineDescription) -> dict[str, dict[str, Any]]:
    ops = {step.id: step.op for step in description.steps}

    def link(ref: str) -> list[str | int]:
        step_id, output = ref.split(".", 1)
        return [step_id, NODES[ops[step_id]][1][output]]

    prompt: dict[str, dict[str, Any]] = {}
    for step in description.steps:
        prompt.update(translate(step, link, prompt))
    return prompt


def translate(step: Step, link: Any, prompt: dict[str, dict[str, Any]]) -> dict[str, Any]:
    p, title = step.params, step.id
    inputs = {name: link(ref) for name, ref in step.inputs.items()}
    if step.op == "load_model":
        return {step.id: node("CheckpointLoaderSimple", title, ckpt_name=p["base_model"])}
    if step.op == "encode":
        return {step.id: node("CLIPTextEncode", title, text=p["text"], **inputs)}
    if step.op == "mask":
        left, top, right, bottom = p["box"]
        return {
            f"{step.id}_frame": node(
                "SolidMask", title, value=0.0, width=p["width"], height=p["height"]
            ),
            f"{step.id}_box": node(
                "SolidMask", title, value=1.0, width=right - left, height=bottom - top
            ),
            step.id: node(
                "MaskComposite",
                title,
                destination=[f"{step.id}_frame", 0],
                source=[f"{step.id}_box", 0],
                x=left,
                y=top,
                operation="add",
            ),
        }
    if step.op == "ip_adapter":
        nodes: dict[str, Any] = {}
        if "ip_loader" not in prompt:  # one loader: the first adapter's model goes through it
            nodes["ip_loader"] = node(
                "IPAdapterUnifiedLoader", "ip_loader", model=inputs["model"], preset=IP_PRESET
            )
            inputs["model"] = ["ip_loader", 0]
        mask = {"attn_mask": inputs.pop("mask")} if "mask" in inputs else {}
        nodes[f"{step.id}_image"] = node("LoadImage", title, image=p["image"])
        nodes[step.id] = node(
            "IPAdapterAdvanced",
            f"{title} {p['pin']}",
            model=inputs["model"],
            ipadapter=["ip_loader", 1],
            image=[f"{step.id}_image", 0],
            weight=p["weight"],
            weight_type="linear",
            combine_embeds="concat",
            start_at=0.0,
            end_at=1.0,
            embeds_scaling="V only",
            **mask,
        )
        return nodes
    if step.op == "empty_latent":
        return {step.id: node("EmptyLatentImage", title, **p)}
    if step.op == "load_image":  # the backdrop, centre-cropped to the frame as the Renderer does
        return {
            f"{step.id}_file": node("LoadImage", f"{title} {p['pin']}", image=p["image"]),
            step.id: node(
                "ImageScale",
                title,
                image=[f"{step.id}_file", 0],
                upscale_method="lanczos",
                width=p["width"],
                height=p["height"],
                crop="center",
            ),
        }
    if step.op == "encode_image":
        return {step.id: node("VAEEncode", title, **inputs)}
    if step.op == "sample":
        return {
            step.id: node(
                "KSampler",
                title,
                seed=p["seed"],
                steps=p["steps"],
                cfg=p["cfg"],
                sampler_name=p["sampler"],
                scheduler=p["scheduler"],
                denoise=p.get("denoise", 1.0),
                model=inputs["model"],
                positive=inputs["positive"],
                negative=inputs["negative"],
                latent_image=inputs["latent"],
            )
        }
    if step.op == "decode":
        return {step.id: node("VAEDecode", title, **inputs)}
    if step.op == "save":
        return {step.id: node("SaveImage", title, filename_prefix=p["prefix"], **inputs)}
    raise ValueError(f"no ComfyUI node for step op {step.op!r}")
