"""MODEL_CARD.md, rendered from a bundle's record.json (record.py) and never edited by hand.

`render_card(record)` is a pure function of the record: the same record always gives the same text, so
`render_card(json.load(record.json)) == MODEL_CARD.md` proves the card says nothing the record does not.
"""

from __future__ import annotations

from typing import Any

CARD_NAME = "MODEL_CARD.md"


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened, None as a dash."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _banner(record: dict[str, Any]) -> list[str]:
    if not record["smoke_test_only"]:
        return []
    reasons = "; ".join(record["smoke_test_reasons"]) or "an ancestor is marked smoke_test_only"
    return [f"> **WARNING: SMOKE TEST ONLY.** This model descends from random weights ({_cell(reasons)}). Its "
            "outputs carry no meaning: use it to test software, never on patients or for results.", ""]


def _use(record: dict[str, Any]) -> list[str]:
    use = record["intended_use"]
    lines = ["## Intended use", "", use["text"] if use["given"] else f"**{use['text']}**", ""]
    if use["given"] and use.get("source"):
        lines += [f"(stated with {use['source']})", ""]
    lines += ["## Limitations", ""] + [f"- {item}" for item in record["limitations"]] + [""]
    if record.get("out_of_scope"):
        lines += ["## Out of scope", ""] + [f"- {item}" for item in record["out_of_scope"]] + [""]
    if record.get("contact"):
        lines += [f"Contact: {record['contact']}", ""]
    return lines


def _lineage(record: dict[str, Any]) -> list[str]:
    rows = []
    for i, step in enumerate(record["lineage"], 1):
        what = step["step"] + (f" (used as {step['used_as']})" if step.get("used_as") else "")
        where = step.get("file") if step["step"] != "bundle" else f"{step['name']}: {step['model_file']}"
        if step.get("recorded_path"):
            where = f"{where} (recorded path: {step['recorded_path']})"
        notes = "; ".join(str(step[k]) for k in ("architecture", "smoke_reason", "note") if step.get(k))
        smoke = {True: "yes", False: "no"}.get(step["smoke_test_only"], "unknown")
        rows.append([i, what, where, step.get("sha256"), smoke, notes])
    return ["## Lineage", "", "Earliest ancestor first; each step as its checkpoint card records it.", "",
            *_table(["#", "step", "file", "sha256", "smoke test only", "notes"], rows), ""]


def _frames(counts: Any) -> str:
    if not isinstance(counts, dict):
        return _cell(counts)
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v is not None) or "-"


def _data(record: dict[str, Any]) -> list[str]:
    data = record["data"]
    rows = [[f"training: {t['step']}", ", ".join(t.get("folders") or []), _frames(t.get("frames")),
             t.get("digest") or t.get("digest_note")] for t in data["training"]]
    for role in ("calibration", "mixed_precision_search", "parity"):
        if data.get(role):
            rows.append([role, data[role]["folder"], data[role]["frames"], data[role]["digest"]])
    lines = ["## Data", ""]
    if not rows:
        return lines + ["No training, calibration or parity data is recorded.", ""]
    rules: dict[str, str] = {}  # per-frame sha256 rule -> the data it applies to
    for name, entry in [*(("training", t) for t in data["training"]), *((r, data.get(r) or {}) for r in
                                                                       ("calibration", "mixed_precision_search",
                                                                        "parity"))]:
        if entry.get("frame_sha256") and name not in rules.get(entry["frame_sha256"], ""):
            rules[entry["frame_sha256"]] = " and ".join(filter(None, [rules.get(entry["frame_sha256"]), name]))
    notes = ["Digest: sha256 of the newline-joined, sorted per-frame sha256 list (training: the frames used for "
             "training). Per-frame sha256 of " + "; of ".join(f"{who}: {rule}" for rule, who in rules.items())
             + "."] if rules else []
    return lines + _table(["data", "folders", "frames", "digest"], rows) + [""] + notes + ([""] if notes else [])


def _metrics(record: dict[str, Any]) -> list[str]:
    lines = ["## Test metrics", ""]
    metrics = record.get("metrics")
    if not metrics:
        lines += ["None recorded (no metrics.json for these weights beside the checkpoint).", ""]
    else:
        values = ", ".join(f"{k} {_cell(v)}" for k, v in metrics["values"].items() if not isinstance(v, (dict, list)))
        lines += [f"Split `{metrics['split']}` ({metrics['images']} images, PyTorch checkpoint): {values}.", ""]
    parity = record.get("export_parity") or {}
    if parity:
        found = ", ".join(f"{k} {_cell(v)}" for k, v in (parity.get("metrics") or {}).items())
        lines += [f"Export parity against PyTorch fp32: {parity.get('status')}"
                  + (f" ({parity['reason']})" if parity.get("reason") else "") + (f": {found}" if found else "")
                  + (f" on {parity['data']}" if parity.get("data") else "") + ".", ""]
    return lines


def _licence(record: dict[str, Any]) -> list[str]:
    licence = record["license"]
    lines = ["## Licences", "", f"- Model: {licence['model']}"
             + (f" (stated with {licence['model_source']})" if licence.get("model_source") else "")]
    lines += [f"- Data {item['folder']}: {item['license']}" for item in licence["data"]]
    return lines + [""]


def _software(record: dict[str, Any]) -> list[str]:
    sw = record["software"]
    git = sw.get("git")
    commit = "not a git checkout" if not git else git["commit"] + (
        " (with uncommitted changes)" if git.get("uncommitted_changes") else "")
    packages = sw["packages"]
    return ["## Software", "", f"pocus-edge {sw['pocus-edge']}, git commit {commit}, Python {sw['python']} on "
            f"{sw['platform']}.", "", f"<details><summary>{len(packages)} installed Python packages</summary>", "",
            *_table(["package", "version"], [[k, v] for k, v in packages.items()]), "", "</details>", ""]


def render_card(record: dict[str, Any]) -> str:
    """The whole MODEL_CARD.md of a record."""
    model = record["model"]
    head = [f"# Model card: {model['name']}", "",
            f"{model['task']} model ({model['architecture']}), exported for {model['target']} {model['precision']} "
            f"at {model['input_size'][0]}x{model['input_size'][1]} px; labels: {', '.join(model['labels']) or '-'}. "
            f"Created {record['created_at']}.", "",
            "Generated from record.json at export; do not edit (regenerate with "
            "`python -m pocus_edge.export.record BUNDLE`).", ""]
    parts = [_banner(record), head, _use(record), _lineage(record), _data(record), _metrics(record),
             _licence(record), _software(record)]
    return "\n".join(line for part in parts for line in part).rstrip("\n") + "\n"
