"""`soul bench identity`: what a character's identity costs and how well it is judged.

    render cost   renders of the tiny model with IP-Adapter conditioning vs without (one run,
                  the version's embedding already cached, as every render after a version's
                  first finds it)
    scorer        ms per image on each path: face (YuNet + SFace) and image (the CLIP fallback
                  of `config/serve.local.yaml`'s Dedupe)
    accuracy      verified rate on same-person pairs and false-accept rate on different-person
                  pairs of real photographs (Grace Hopper, matplotlib's sample data; Eileen
                  Collins, scikit-image's astronaut), each as taken and mirrored, cropped, grey,
                  JPEG at quality 30 and darker; anchor one picture, judge another
    gate          extra renders per delivered variant: each variant rendered with new seeds
                  until Dedupe's identity verdict is verified or identity.attempts run out,
                  against an anchor made from one render of the same prompt

The tiny model's weights are random: its numbers show the wiring and the costs, not likeness.
"""

from __future__ import annotations

import argparse
import io
import itertools
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from serve_app.bench.common import BENCH_ARGS, write_report
from serve_app.bench.dedupe import LOCAL_CONFIG, jpeg

RENDERS = 8
VARIANTS = 8
PROMPT = "portrait of a woman, pastel"


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _grey(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.repeat(np.asarray(Image.fromarray(pixels).convert("L"))[..., None], 3, axis=2)


CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as taken": lambda p: p,
    "mirror": lambda p: np.ascontiguousarray(p[:, ::-1]),
    "crop": lambda p: np.ascontiguousarray(p[40:460, 60:460]),
    "grey": _grey,
    "jpeg q30": lambda p: jpeg(p, 30),
    "darker": lambda p: (p * 0.5).astype(np.uint8),
}


def people() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        hopper = np.asarray(image.convert("RGB"))
    return {"hopper": hopper, "astronaut": data.astronaut()}


def identity_main(ns: argparse.Namespace) -> int:
    from deployments.dedupe import DedupeConfig, DedupeEngine
    from serve_app.characters.verdicts import IdentityThresholds
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import build_tiny_models
    from serve_app.settings import Settings, config_file

    models_dir = Settings().resolved_models_dir
    build_tiny_models(models_dir)
    manager = ModelManager(models_dir)
    app = yaml.safe_load(config_file(LOCAL_CONFIG).read_text())["applications"][0]
    dedupe = DedupeEngine(DedupeConfig.model_validate(app["args"]["dedupe"]), manager)
    thresholds = IdentityThresholds()
    count = ns.requests or RENDERS
    with tempfile.TemporaryDirectory() as tmp:
        render_cost, renders = _render_cost(manager, tmp, count)
    report = {
        "render_cost": render_cost,
        "scorer_ms": _scorer_ms(dedupe, renders, thresholds),
        "accuracy": _accuracy(dedupe, thresholds),
        "gate": _gate(dedupe, renders, thresholds, manager),
    }
    _print(report)
    write_report(ns, report)
    return 0


def _render_cost(manager: Any, tmp: str, count: int) -> tuple[dict[str, Any], list[Any]]:
    """Median seconds a render without and with conditioning (one engine each)."""
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.characters.verdicts import IdentityConditioning
    from serve_app.diffusion.tiny import TINY_IP_ADAPTER, TINY_MODEL
    from serve_app.schemas import RenderJob
    from serve_app.storage.local import LocalObjectStore, MediaSigner

    objects = LocalObjectStore(tmp, MediaSigner(b"bench" * 8))
    objects.put("soul/bench/identity/1/references/0.png", _png(people()["hopper"]))
    who = IdentityConditioning(
        soul_id="bench",
        version=1,
        reference_keys=["soul/bench/identity/1/references/0.png"],
        strength=0.6,
    )
    config = RendererConfig(**BENCH_ARGS["renderer"], ip_adapter=TINY_IP_ADAPTER)
    sides = {
        "without": (RendererEngine(manager, config.model_copy(update={"ip_adapter": None})), None),
        "with": (RendererEngine(manager, config, objects), who),
    }
    seconds: dict[str, float] = {}
    renders = []
    for side, (engine, identity) in sides.items():

        def job(seed: int, identity: Any = identity) -> Any:
            return RenderJob(
                style_id="bench",
                base_model_ref=TINY_MODEL,
                prompt=PROMPT,
                negative_prompt="blurry",
                seed=seed,
                identity=identity,
            )

        engine.render(job(10_000))  # loads the model (and the adapter, the embedding)
        times = []
        for seed in range(count):
            t0 = time.perf_counter()
            frames = engine.render(job(seed))
            times.append(time.perf_counter() - t0)
            if side == "without":
                renders.append(frames.pixels[0])
        seconds[side] = _median(times)
    ratio = round(seconds["with"] / seconds["without"], 3)
    return {"n": count, "median_s": seconds, "ratio_with_to_without": ratio}, renders


def _scorer_ms(dedupe: Any, renders: list[Any], thresholds: Any) -> dict[str, float]:
    """Median ms to judge one image, by path."""
    photo = people()["hopper"]
    scorer = dedupe.scorer()
    face_anchors = scorer.anchors([photo])
    image_anchors = scorer.anchors([renders[0]])  # a render shows no face: the fallback
    return {
        "face": _ms(lambda: scorer.judge(photo, face_anchors, thresholds)),
        "image": _ms(lambda: scorer.judge(renders[1], image_anchors, thresholds)),
    }


def _accuracy(dedupe: Any, thresholds: Any) -> dict[str, Any]:
    """Anchor one picture, judge another: same person (verified rate), different people
    (false-accept rate); the unscorable are counted apart."""
    scorer = dedupe.scorer()
    pictures = [(who, change(p)) for who, p in people().items() for change in CHANGES.values()]
    anchors = [scorer.anchors([p]) for _, p in pictures]
    same: list[str] = []
    other: list[str] = []
    for (i, (a, _)), (_, (b, pixels)) in itertools.permutations(enumerate(pictures), 2):
        verdict = scorer.judge(pixels, anchors[i], thresholds).verdict
        (same if a == b else other).append(verdict)
    return {
        "threshold": thresholds.face,
        "same_person_pairs": len(same),
        "verified_rate": _rate(same, "verified"),
        "different_person_pairs": len(other),
        "false_accept_rate": _rate(other, "verified"),
        "unscorable": same.count("unscorable") + other.count("unscorable"),
    }


def _gate(dedupe: Any, renders: list[Any], thresholds: Any, manager: Any) -> dict[str, Any]:
    """Renders a delivered variant took, beyond its first, under Dedupe's identity verdict."""
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.characters.verdicts import IdentityJudging
    from serve_app.diffusion.tiny import TINY_MODEL
    from serve_app.schemas import Frames, RenderJob

    engine = RendererEngine(manager, RendererConfig(**BENCH_ARGS["renderer"]))
    anchors = dedupe.identity_anchors([_png(renders[0])])
    judging = IdentityJudging(anchors=anchors, thresholds=thresholds)
    extra: list[int] = []
    flagged, seed = 0, 1000
    for _ in range(VARIANTS):
        made, verified = 0, False
        while made < thresholds.attempts and not verified:
            seed += 1
            made += 1
            job = RenderJob(
                style_id="bench",
                base_model_ref=TINY_MODEL,
                prompt=PROMPT,
                negative_prompt="blurry",
                seed=seed,
            )
            frames = engine.render(job)
            verdict = dedupe.check(Frames(pixels=frames.pixels), [], judging).identity
            verified = verdict is not None and verdict.verdict == "verified"
        flagged += not verified
        extra.append(made - 1)
    return {
        "variants": VARIANTS,
        "attempts": thresholds.attempts,
        "image_threshold": thresholds.image,
        "extra_renders_per_variant": round(sum(extra) / len(extra), 3),
        "flagged": flagged,
    }


def _ms(call: Callable[[], Any], n: int = 20) -> float:
    call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(_median(times) * 1000, 2)


def _median(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 4)


def _rate(verdicts: list[str], name: str) -> float:
    return round(verdicts.count(name) / len(verdicts), 3)


def _print(report: dict[str, Any]) -> None:
    cost, ms, acc, gate = (
        report["render_cost"],
        report["scorer_ms"],
        report["accuracy"],
        report["gate"],
    )
    print(f"\nRender (tiny model, n={cost['n']}): median s without / with identity conditioning")
    print(
        f"  {cost['median_s']['without']:.4f} / {cost['median_s']['with']:.4f}"
        f"  ratio {cost['ratio_with_to_without']:.2f}"
    )
    print(f"Scorer ms per image: face {ms['face']:.2f}, image (CLIP fallback) {ms['image']:.2f}")
    print(
        f"Real photographs at cosine {acc['threshold']}: verified {acc['verified_rate']:.3f} of "
        f"{acc['same_person_pairs']} same-person pairs, false accepts "
        f"{acc['false_accept_rate']:.3f} of {acc['different_person_pairs']} different-person "
        f"pairs, {acc['unscorable']} unscorable"
    )
    print(
        f"Gate (tiny model, image fallback at {gate['image_threshold']}): "
        f"{gate['extra_renders_per_variant']:.2f} extra renders per variant, "
        f"{gate['flagged']} of {gate['variants']} flagged after {gate['attempts']} attempts"
    )
