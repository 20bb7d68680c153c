"""How the Renderer's jobs share a pipeline call: jobs of one call shape run as one call
(``RendererEngine.render_batch``), and the denoising steps such a call runs."""

from __future__ import annotations

from typing import Any

from serve_app.schemas import RenderJob


def call_shape(job: RenderJob) -> tuple[Any, ...]:
    """Jobs of one shape run as one pipeline call: a call takes one style, one img2img strength,
    one identity strength (or none), one set of masked regions with their strengths (one mask
    tensor a call; none for a job without a cast), one size (its aspect) and negative prompts
    for all of its images or none (an empty one is not the same as none)."""
    return (
        job.base_model_ref,
        tuple(job.lora_ids),
        job.reference_strength,
        bool(job.negative_prompt),
        None if job.identity is None else job.identity.strength,  # the IP-Adapter's scale
        tuple((m.box, m.identity.strength) for m in job.cast),  # its masks, their count
        job.aspect,  # one latent size a call
    )


def steps_run(inputs: dict[str, Any]) -> int:
    """Denoising steps a call runs: img2img runs ``int(steps * strength)`` of them."""
    steps = int(inputs["num_inference_steps"])
    return max(1, int(steps * inputs["strength"])) if "strength" in inputs else steps
