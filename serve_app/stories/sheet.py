"""The storyboard sheet: a PDF (fpdf2), A4 landscape. Page 1 is the cover (the project, the
script's title, the cast with each pin); then the frames in the order given, ``per_page`` to a
page (1, 2 side by side, or 4 in a 2 by 2 grid), each image fitted to its cell with its notes
under it as text (scene heading, camera, mood, lighting, action, dialogue, notes). Images are
embedded as JPEG at ``DPI`` for the size they print at (``for_print``).

Pages never break by themselves: a sheet of ``n`` frames has exactly ``1 + ceil(n / per_page)``
pages, and a note too long for its cell is shortened with "...". Text is set in the PDF core
fonts (nothing to ship), so characters outside Latin-1 are spelled in ASCII where they have
a usual spelling (quotes, dashes, ellipsis) and as "?" otherwise.
"""

from __future__ import annotations

import io
import math
from typing import Literal

from fpdf import FPDF
from PIL import Image

from serve_app.stories.exports import Cover, ExportFrame, notes

PAGE_W, PAGE_H, MARGIN, GAP = 297.0, 210.0, 10.0, 6.0
GRIDS: dict[int, tuple[int, int]] = {1: (1, 1), 2: (2, 1), 4: (2, 2)}  # columns, rows
SPELLED = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--",
    "\u2026": "...", "\u00a0": " ",
}  # fmt: skip
PerPage = Literal[1, 2, 4]
DPI, JPEG_QUALITY = 150, 85


def latin1(text: str) -> str:
    spelled = "".join(SPELLED.get(char, char) for char in text)
    return spelled.encode("latin-1", "replace").decode("latin-1")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def storyboard_pdf(cover: Cover, frames: list[ExportFrame], per_page: PerPage = 2) -> bytes:
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(latin1(cover.title or cover.project_name))
    pdf.set_creator("Soul Serve storyboards")
    cover_page(pdf, cover, len(frames))
    columns, rows = GRIDS[per_page]
    cell_w = (PAGE_W - 2 * MARGIN - (columns - 1) * GAP) / columns
    cell_h = (PAGE_H - 2 * MARGIN - (rows - 1) * GAP) / rows
    for start in range(0, len(frames), per_page):
        pdf.add_page()
        for slot, frame in enumerate(frames[start : start + per_page]):
            x = MARGIN + (slot % columns) * (cell_w + GAP)
            y = MARGIN + (slot // columns) * (cell_h + GAP)
            frame_cell(pdf, frame, start + slot + 1, (x, y, cell_w, cell_h))
    return bytes(pdf.output())


def page_count(frames: int, per_page: PerPage = 2) -> int:
    return 1 + math.ceil(frames / per_page)


def cover_page(pdf: FPDF, cover: Cover, frames: int) -> None:
    pdf.add_page()
    pdf.set_xy(MARGIN, 30)
    pdf.set_font("Helvetica", "B", 26)
    pdf.multi_cell(0, 12, latin1(cover.title or cover.project_name))
    pdf.set_font("Helvetica", "", 13)
    pdf.set_x(MARGIN)
    pdf.multi_cell(0, 7, latin1(f"Project: {cover.project_name} ({cover.project_id})"))
    pdf.set_x(MARGIN)
    pdf.multi_cell(0, 7, f"Frames: {frames}")
    pdf.ln(6)
    pdf.set_font("Helvetica", "B", 15)
    pdf.set_x(MARGIN)
    pdf.multi_cell(0, 9, "Cast")
    pdf.set_font("Helvetica", "", 11)
    for entry in cover.cast[:24]:
        pin = f" [{entry.pin}]" if entry.pin else ""
        text = f"{entry.name}{pin}" + (f": {entry.description}" if entry.description else "")
        pdf.set_x(MARGIN)
        pdf.multi_cell(0, 6, latin1(clip(text, 160)))


def for_print(image: Image.Image, width_mm: float) -> io.BytesIO:
    """The image at ``DPI`` for its printed width, as JPEG (embedded as is): a sheet of 100
    full-size frames stays a few MB instead of each frame's pixels re-compressed losslessly."""
    pixels = max(1, round(width_mm / 25.4 * DPI))
    if image.width > pixels:
        image = image.resize((pixels, max(1, round(image.height * pixels / image.width))))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    out.seek(0)
    return out


def frame_cell(pdf: FPDF, frame: ExportFrame, position: int, box: tuple[float, ...]) -> None:
    x, y, w, h = box
    image = Image.open(io.BytesIO(frame.image))
    area_h = h * 0.6  # every cell's image area is this high, so notes line up across a row
    image_h = min(area_h, w * image.height / image.width)
    image_w = image_h * image.width / image.height
    printed = for_print(image, image_w)
    pdf.image(printed, x=x + (w - image_w) / 2, y=y + (area_h - image_h) / 2, w=image_w, h=image_h)
    pdf.set_xy(x, y + area_h + 2)
    pdf.set_font("Helvetica", "B", 10)
    title = f"{position}. {frame.scene.scene_id} frame {frame.frame_index} v{frame.render_version}"
    pdf.multi_cell(w, 5, latin1(title))
    size = 8 if h > 120 else 7
    line_h, label_w = size * 0.45, size * 2.3
    chars_per_line = int((w - label_w) / (size * 0.19))
    lines_left = int((y + h - pdf.get_y()) / line_h)
    for label, text in notes(frame.scene):
        lines = min(lines_left, max(1, math.ceil(len(text) / chars_per_line)))
        if lines <= 0:
            break
        top = pdf.get_y()
        pdf.set_xy(x, top)
        pdf.set_font("Helvetica", "B", size)
        pdf.cell(label_w, line_h, f"{label}:")
        pdf.set_xy(x + label_w, top)
        pdf.set_font("Helvetica", "", size)
        pdf.multi_cell(w - label_w, line_h, latin1(clip(text, lines * chars_per_line)))
        lines_left -= lines
