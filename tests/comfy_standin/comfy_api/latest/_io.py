"""Stand-in for ``comfy_api.latest._io``: V3 schema classes with ComfyUI's constructor signatures.

Only the types the node pack uses are here. Inputs and outputs keep their arguments as
attributes under the names ComfyUI uses (``id``, ``optional``, ``tooltip``, ``default``,
``min``, ``max``, ``step``, ``options``, ``force_input`` ...), so tests read schemas the same
way from this module and from ComfyUI itself.
"""

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Input:
    Parent = None

    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                 lazy: bool = None, extra_dict=None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                 lazy: bool = None, default: Any = None, socketless: bool = None,
                 widget_type: str = None, force_input: bool = None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input


class Output:
    Parent = None

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None,
                 is_output_list=False):
        self.id = id
        # Kept as given: /object_info names an output without one by its type (e.g. "MASK").
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyTypeIO:
    io_type: str = None
    Input = Input
    Output = Output


def comfytype(io_type: str):
    """Binds ``io_type`` to the class and gives it its own Input/Output classes (as ComfyUI does)."""
    def decorate(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            base = getattr(cls, name)
            setattr(cls, name, type(base.__name__, (base,), {"Parent": cls}))
        return cls
    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A ComfyType for a custom socket type, matched between nodes by its name only."""
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        pass
    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: bool = None, label_on: str = None,
                     label_off: str = None, socketless: bool = None, force_input: bool = None,
                     extra_dict=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None,
                             force_input, extra_dict)
            self.label_on = label_on
            self.label_off = label_off


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: int = None, min: int = None, max: int = None,
                     step: int = None, control_after_generate: bool = None, display_mode=None,
                     socketless: bool = None, force_input: bool = None, extra_dict=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None,
                             force_input, extra_dict)
            self.min = min
            self.max = max
            self.step = step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, default: float = None, min: float = None,
                     max: float = None, step: float = None, round: float = None,
                     display_mode=None, socketless: bool = None, force_input: bool = None,
                     extra_dict=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None,
                             force_input, extra_dict)
            self.min = min
            self.max = max
            self.step = step
            self.round = round
            self.display_mode = display_mode


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None,
                     lazy: bool = None, multiline=False, placeholder: str = None,
                     default: str = None, dynamic_prompts: bool = None, socketless: bool = None,
                     force_input: bool = None, extra_dict=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None,
                             force_input, extra_dict)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, options: list[str] = None, display_name: str = None,
                     optional=False, tooltip: str = None, lazy: bool = None, default: str = None,
                     control_after_generate: bool = None, upload=None, image_folder=None,
                     remote=None, socketless: bool = None, extra_dict=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None,
                             None, extra_dict)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload
            self.image_folder = image_folder
            self.remote = remote


@comfytype(io_type="IMAGE")
class Image(ComfyTypeIO):
    pass


@comfytype(io_type="MASK")
class Mask(ComfyTypeIO):
    pass


class Hidden(str, Enum):
    """Values ComfyUI hands a node besides its inputs, read in ``execute`` as ``cls.hidden.<name>``."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        """ComfyUI v0.3.64's check when it registers a node: ids unique among the inputs, among
        the outputs, and between the two (newer versions dropped the last rule; a pack that
        passes here passes there)."""
        input_ids = [i.id for i in self.inputs]
        output_ids = [o.id for o in self.outputs]
        issues = []
        for kind, ids in (("Input", input_ids), ("Output", output_ids)):
            if len(set(ids)) != len(ids):
                issues.append(f"{kind} ids must be unique, but "
                              f"{[item for item, count in Counter(ids).items() if count > 1]} are not.")
        if shared := set(input_ids) & set(output_ids):
            issues.append(f"Ids must be unique between inputs and outputs, but {shared} are not.")
        if issues:
            raise ValueError("\n".join(issues))


class ComfyNode:
    """Base of V3 nodes: classmethods only, no instance state.

    ComfyUI executes a copy of the class whose ``hidden`` holds the values the schema asked for
    (``unique_id`` ...); tests do the same with a subclass.
    """

    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        """What ComfyUI calls when it registers the node and for ``/object_info``: the schema,
        validated."""
        schema = cls.define_schema()
        schema.validate()
        return schema

    @classmethod
    def execute(cls, **kwargs) -> "NodeOutput":
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        raise NotImplementedError


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index) -> Any:
        return self.args[index]
