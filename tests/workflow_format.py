"""UI-format workflow files: node schemas, validation against them, conversion to the API format.

Schemas are in the format of ComfyUI's ``GET /object_info`` (``input`` / ``input_order`` /
``output`` per node type): the core and VideoHelperSuite snapshots in ``fixtures/comfyui``,
our nodes' own ``define_schema`` turned into the same format by :func:`node_info`, or a running
server's answer. The rules for ``widgets_values`` are in ``fixtures/README.md``.
"""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).resolve().parent / "fixtures" / "comfyui"
WORKFLOWS = REPO / "workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")
# Frontend-only nodes: they never reach the server.
UI_ONLY = {"Note", "MarkdownNote"}
# Nodes that load a diffusion checkpoint, which a test machine does not have.
CHECKPOINT_NODES = {"CheckpointLoaderSimple", "CheckpointLoader", "UNETLoader", "unCLIPCheckpointLoader"}
# Per-format widgets VHS adds to a dict of widget values besides the schema's own; the UI
# keeps its preview state there as well.
VHS_UI_KEYS = {"videopreview"}


def snapshot_info() -> dict:
    """Core (without the paid cloud-API nodes) and VideoHelperSuite schemas from the snapshot."""
    core = json.loads((SNAPSHOTS / "object_info_core.json").read_text())
    vhs = json.loads((SNAPSHOTS / "object_info_vhs.json").read_text())
    core = {name: info for name, info in core.items() if not info["python_module"].startswith("comfy_api_nodes")}
    return core | vhs


def _input_spec(inp) -> list:
    """One V3 input as ``/object_info`` lists it: ``[type, options]``."""
    options = {key: getattr(inp, key) for key in ("default", "min", "max", "step")
               if getattr(inp, key, None) is not None}
    if getattr(inp, "force_input", None):
        options["forceInput"] = True
    if inp.io_type == "COMBO":
        options["options"] = list(inp.options)
    return [inp.io_type, options]


def node_info(node_cls) -> dict:
    """A V3 node class's schema in the ``/object_info`` format (the fields validation reads)."""
    schema = node_cls.define_schema()
    sections = {"required": {}, "optional": {}, "hidden": {}}
    for inp in schema.inputs:
        sections["optional" if inp.optional else "required"][inp.id] = _input_spec(inp)
    for hidden in schema.hidden:
        sections["hidden"][hidden.name] = [hidden.value]
    return {
        "name": schema.node_id, "display_name": schema.display_name, "category": schema.category,
        "input": {key: value for key, value in sections.items() if value},
        "input_order": {key: list(value) for key, value in sections.items() if value},
        "output": [out.io_type for out in schema.outputs],
        "output_name": [out.display_name or out.io_type for out in schema.outputs],
        "output_node": schema.is_output_node,
    }


def _kind(spec: list) -> tuple[str, dict]:
    """``(type, options)`` of an input spec, with combos as ``("COMBO", {"options": [...]})``."""
    kind = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list):
        options["options"] = kind
        kind = "COMBO"
    return kind, options


def inputs_in_order(info: dict) -> list[tuple[str, str, dict, bool]]:
    """``(name, type, options, required)`` for every input, required ones first."""
    order = info.get("input_order") or {key: list(info["input"].get(key, {})) for key in ("required", "optional")}
    return [(name, *_kind(info["input"][section][name]), section == "required")
            for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(kind: str, options: dict) -> bool:
    return kind in WIDGET_TYPES and not options.get("forceInput")


def widget_slots(info: dict) -> list[tuple[str, str, dict]]:
    """The entries of a list of ``widgets_values`` in order: ``(name, type, options)``, with the
    extra entries the frontend stores named ``"<name>:control"`` and ``"<name>:upload"``."""
    slots = []
    for name, kind, options, _ in inputs_in_order(info):
        if not is_widget(kind, options):
            continue
        slots.append((name, kind, options))
        if options.get("control_after_generate"):
            slots.append((name + ":control", "CONTROL", {}))
        if any(options.get(flag) for flag in UPLOAD_FLAGS):
            slots.append((name + ":upload", "UPLOAD", {}))
    return slots


def types_match(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: equal, either side ``*``, or overlapping comma-separated sets."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def value_problem(value, kind: str, options: dict) -> str | None:
    """Why ``value`` is not allowed for a widget of ``kind``, or None."""
    if kind == "CONTROL":
        return None if value in CONTROL_VALUES else f"{value!r} is not one of {sorted(CONTROL_VALUES)}"
    if kind == "UPLOAD":
        return None if value is None or isinstance(value, str) else f"{value!r} is not an upload widget value"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind == "COMBO":
        choices = options.get("options", [])
        # An empty list stands for files on disk: any file name is allowed there.
        if not choices:
            return None if isinstance(value, str) else f"{value!r} is not a file name"
        return None if value in choices else f"{value!r} is not one of {choices}"
    number = (int,) if kind == "INT" else (int, float)
    if isinstance(value, bool) or not isinstance(value, number):
        return f"{value!r} is not {'an integer' if kind == 'INT' else 'a number'}"
    if "min" in options and value < options["min"]:
        return f"{value!r} is below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value!r} is above the maximum {options['max']}"
    return None


def _widget_problems(node: dict, info: dict) -> list[str]:
    values = node.get("widgets_values", [])
    where = f"node {node['id']} ({node['type']})"
    if isinstance(values, dict):
        return [f"{where}: {problem}" for problem in _named_widget_problems(values, info)]
    slots = widget_slots(info)
    if len(values) != len(slots):
        return [f"{where}: {len(values)} widget values for {len(slots)} widget slots "
                f"({', '.join(name for name, _, _ in slots)})"]
    return [f"{where}: widget {name!r}: {problem}" for (name, kind, options), value in zip(slots, values)
            if (problem := value_problem(value, kind, options))]


def _named_widget_problems(values: dict, info: dict) -> list[str]:
    """VideoHelperSuite's widget values, stored by name."""
    slots = {name: (kind, options) for name, kind, options in widget_slots(info) if ":" not in name}
    allowed = dict(slots)
    for name, (_, options) in slots.items():
        added = options.get("formats", {}).get(values.get(name))
        if isinstance(added, list):  # the widgets VHS_VideoCombine's chosen format adds
            allowed.update({item[0]: _kind(item[1:]) for item in added})
    problems = [f"unknown widget {key!r}" for key in values if key not in allowed and key not in VHS_UI_KEYS]
    problems += [f"widget {name!r} missing" for name in slots if name not in values]
    return problems + [f"widget {key!r}: {problem}" for key, value in values.items()
                       if key in allowed and (problem := value_problem(value, *allowed[key]))]


def validate(workflow: dict, infos: dict) -> list[str]:
    """Every problem ComfyUI would have with this UI-format workflow; empty when it is sound."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    problems = []
    if len(nodes) != len(workflow["nodes"]):
        problems.append("node ids are not unique")
    links = {link[0]: link for link in workflow.get("links", [])}
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in UI_ONLY:
            if node.get("inputs") or node.get("outputs"):
                problems.append(f"{where}: a frontend-only node cannot be linked")
            continue
        info = infos.get(node["type"])
        if info is None:
            problems.append(f"{where}: unknown node type")
            continue
        sockets = {name: (kind, required) for name, kind, options, required in inputs_in_order(info)
                   if not is_widget(kind, options)}
        widgets = {name for name, *_ in inputs_in_order(info)} - set(sockets)
        connected = set()
        for slot, inp in enumerate(node.get("inputs", [])):
            name = inp["name"]
            if name not in sockets and not (name in widgets and "widget" in inp):
                problems.append(f"{where}: no input named {name!r}")
            if inp.get("link") is None:
                continue
            link = links.get(inp["link"])
            if link is None or link[3] != node["id"] or link[4] != slot:
                problems.append(f"{where}: input {name!r} refers to link {inp['link']}, which does not end there")
            else:
                connected.add(name)
        problems += [f"{where}: required input {name!r} is not connected"
                     for name, (_, required) in sockets.items() if required and name not in connected]
        for slot, out in enumerate(node.get("outputs", [])):
            if slot >= len(info["output"]) or out["type"] != info["output"][slot]:
                problems.append(f"{where}: output {slot} is not of type {out['type']}")
            for link_id in out.get("links") or []:
                link = links.get(link_id)
                if link is None or link[1] != node["id"] or link[2] != slot:
                    problems.append(f"{where}: output {slot} lists link {link_id}, which does not start there")
        problems += _widget_problems(node, info)
    for link_id, source, source_slot, target, target_slot, kind in links.values():
        if source not in nodes or target not in nodes:
            problems.append(f"link {link_id}: connects a missing node")
            continue
        source_info, target_node = infos.get(nodes[source]["type"]), nodes[target]
        if source_info is None or target_node["type"] not in infos:
            continue
        outputs = source_info["output"]
        if source_slot >= len(outputs):
            problems.append(f"link {link_id}: node {source} has no output {source_slot}")
            continue
        if target_slot >= len(target_node.get("inputs", [])):
            problems.append(f"link {link_id}: node {target} has no input slot {target_slot}")
            continue
        name = target_node["inputs"][target_slot]["name"]
        spec = dict((n, k) for n, k, *_ in inputs_in_order(infos[target_node["type"]])).get(name)
        if spec is None:
            continue
        if not types_match(outputs[source_slot], spec):
            problems.append(f"link {link_id}: {nodes[source]['type']} output {outputs[source_slot]} does not fit "
                            f"{target_node['type']}.{name} ({spec})")
        if kind != outputs[source_slot]:
            problems.append(f"link {link_id}: labelled {kind}, but the output is {outputs[source_slot]}")
    return problems


def to_api(workflow: dict, infos: dict) -> dict:
    """The API-format prompt (``POST /prompt``) the web frontend makes from a UI-format workflow."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY or node.get("mode", 0) != 0:
            continue
        info = infos[node["type"]]
        inputs = {}
        values = node.get("widgets_values", [])
        if isinstance(values, dict):
            inputs.update({key: value for key, value in values.items() if key not in VHS_UI_KEYS})
        else:
            inputs.update({name: value for (name, _, _), value in zip(widget_slots(info), values) if ":" not in name})
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, source, slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def node_types(path: Path) -> set[str]:
    return {node["type"] for node in json.loads(path.read_text())["nodes"]}
