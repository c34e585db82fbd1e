"""Frame lists: the output of `pocus corpus select` and the input of `distill --data-list` / `kd --transfer-list`.

Format (UTF-8 text): one frame per line, `PATH` for a still image or single-frame DICOM, `PATH#N` for frame N of
a cine DICOM or a video (the references `scan_corpus` reports). Blank lines and lines starting with `#` are
ignored (select writes its settings there; a `# crop_overlays: true|false` line must match the run's
--crop-overlays). A relative PATH is relative to the current folder, as `--data` is;
select writes absolute paths. A path is matched to the scanned corpus after resolving it, so `./a.png` and
`/abs/a.png` are the same frame. Every entry must be a frame the scan of `--data` keeps: a missing file, a file
outside `--data`, a frame index the file does not have, a frame the scan dropped (unreadable, exact duplicate)
or an entry listed twice is an error that names the line, never silently skipped. A listed image of a held-out
(validation/test) split stays out (that rule wins over any list), with a warning that counts them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from ..errors import DataError
from ..io import atomic_write_text
from .corpus import Corpus, FrameRef

log = logging.getLogger(__name__)


def ref_text(ref: FrameRef) -> str:
    """The reference of a corpus frame: PATH or PATH#N."""
    return ref.path if ref.frame is None else f"{ref.path}#{ref.frame}"


def parse_ref(text: str) -> tuple[str, int | None]:
    """'a/b.dcm#3' -> ('a/b.dcm', 3); 'a/b.png' -> ('a/b.png', None); a file really named 'x#3' stays whole."""
    head, sep, tail = text.rpartition("#")
    if sep and tail.isascii() and tail.isdigit() and not (Path(text).is_file() and not Path(head).is_file()):
        return head, int(tail)
    return text, None


def _key(path: str, frame: int | None) -> tuple[str, int | None]:
    return str(Path(path).resolve()), frame


def write_frame_list(path: Path, refs: list[str], header: list[str]) -> Path:
    """Write a frame list atomically: `# ` header lines, then one reference per line."""
    for ref in refs:
        if "\n" in ref or "\r" in ref:
            raise DataError(f"frame {ref!r}: a file name with a line break cannot go into a frame list; rename it")
    lines = [f"# {line}" for line in header] + list(refs)
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_frame_list(path: Path) -> list[tuple[int, str]]:
    """(line number, entry) of every frame line; DataError when the file is unreadable or lists nothing."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"frame list {path}: no such file; pass the list written by `pocus corpus select --out`")
    except UnicodeDecodeError as exc:
        raise DataError(f"frame list {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")
    entries = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
               if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise DataError(f"frame list {path}: lists no frames (only blank or # comment lines); pass a list written by "
                        "`pocus corpus select`")
    return entries


def list_settings(path: Path) -> dict[str, str]:
    """The `# key: value` header lines of a frame list (e.g. crop_overlays from `pocus corpus select`)."""
    settings = {}
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        match = re.fullmatch(r"#\s*([a-z_]+):\s*(.*)", line.strip())
        if match:
            settings[match[1]] = match[2].strip()
    return settings


def check_crop_setting(list_path: Path, crop_overlays: bool) -> None:
    """A list selected on frames cropped to the ultrasound region trains on cropped frames, and the other way round.

    Lists without the header line (hand-made, or older) are not checked.
    """
    selected = list_settings(list_path).get("crop_overlays")
    if selected is None or selected == str(crop_overlays).lower():
        return
    if selected == "true":
        raise DataError(f"frame list {list_path} was selected on frames cropped to the ultrasound region "
                        "(--crop-overlays): train with --crop-overlays too, or select again without it")
    raise DataError(f"frame list {list_path} was selected on uncropped frames, but this run crops them "
                    "(--crop-overlays): drop --crop-overlays, or select again with it")


def _dropped_reasons(corpus: Corpus) -> dict[tuple[str, int | None], str]:
    """Why the scan left a frame out, keyed like the list's entries."""
    reasons: dict[tuple[str, int | None], str] = {}
    for ref, reason in corpus.skipped:
        reasons[_key(*parse_ref(ref))] = f"the scan skipped it ({reason})"
    for ref, original in corpus.duplicates:
        reasons[_key(*parse_ref(ref))] = f"an exact duplicate of {original}, dropped by the scan"
    return reasons


def keep_listed(corpus: Corpus, list_path: Path) -> tuple[Corpus, int]:
    """The corpus restricted to the listed frames (same order as scanned) and how many scanned frames were dropped."""
    entries = read_frame_list(list_path)
    index = {_key(f.path, f.frame): i for i, f in enumerate(corpus.frames)}
    reasons = _dropped_reasons(corpus)
    held_out = {_key(*parse_ref(ref)) for ref in corpus.excluded}
    chosen: dict[int, int] = {}
    left_out = 0
    problems: list[str] = []
    for number, entry in entries:
        path, frame = parse_ref(entry)
        key = _key(path, frame)
        if key in index:
            if index[key] in chosen:
                problems.append(f"line {number}: {entry!r} is listed twice (first on line {chosen[index[key]]})")
            else:
                chosen[index[key]] = number
        elif key in held_out:
            left_out += 1  # the held-out rule overrides the list: counted and logged, not an error
        elif key in reasons:
            problems.append(f"line {number}: {entry!r} is {reasons[key]}")
        elif not Path(path).is_file():
            problems.append(f"line {number}: {entry!r}: no such file")
        else:
            problems.append(f"line {number}: {entry!r} is not a frame of --data (a file outside those folders, a "
                            "mask/annotation, or a frame index the file does not have)")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DataError(f"frame list {list_path}: {len(problems)} of {len(entries)} entries cannot be used: {shown}. "
                        "Select again on the same --data (pocus corpus select) or fix those lines")
    if left_out:
        log.warning("frame list %s: %d listed frame(s) are images of a held-out (validation/test) split and stay out",
                    list_path, left_out)
    keep = sorted(chosen)
    digests = [corpus.frame_digests[i] for i in keep] if corpus.frame_digests else []
    listed = replace(corpus, frames=[corpus.frames[i] for i in keep], frame_digests=digests)
    return listed, len(corpus.frames) - len(keep)
