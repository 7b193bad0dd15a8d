"""Design files: a graph plus its training section, layout and weights reference, as versioned JSON.

The IR classes know nothing of JSON; this module maps between them. Saving is atomic (temp file +
rename) and a file saved here loads and saves back to identical bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convstudio.ir.errors import DesignError, GraphError
from convstudio.ir.graph import PLAIN_FIELDS, Graph, keep_built, paused_gc, verify
from convstudio.ir.groups import check_groups
from convstudio.ir.training import validate_training

FORMAT = "convstudio.design"
VERSION = 1
TOP_LEVEL = ("format", "version", "name", "inputs", "nodes", "outputs", "groups", "training", "weights", "layout")
NODE_FIELDS = PLAIN_FIELDS


@dataclass
class Design:
    """A graph with everything a design file carries."""

    graph: Graph
    training: dict = field(default_factory=dict)
    weights: str | None = None
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.graph.name

    def weights_path(self) -> Path | None:
        """The weights file paired with the design, whether or not it exists yet.

        That is the file its `weights` field names (older files; it must stay inside the design's folder),
        else `<stem>.safetensors` beside the design file; None for a design with neither.
        """
        if not self.weights:
            if self.path is None or self.path.suffix == ".safetensors":
                return None
            return _inside(self.path.parent, self.path.with_suffix(".safetensors"), f"weights beside '{self.path}'")
        where = f"field weights in '{self.path}'" if self.path else "field weights"
        if "\x00" in self.weights:
            raise DesignError("weights names a path with a NUL character", where)
        if Path(self.weights).is_absolute():
            raise DesignError("weights must be a file inside the design's folder, not an absolute path", where)
        base = self.path.parent if self.path else Path.cwd()
        return _inside(base, base / self.weights, where)


def _inside(folder: Path, path: Path, where: str) -> Path:
    """`path`, which must resolve (symbolic links followed) inside `folder`."""
    try:
        home = folder.resolve()
        inside = path.resolve().is_relative_to(home)
    except (OSError, RuntimeError) as e:  # a symbolic-link loop
        raise DesignError(f"cannot resolve the weights path: {e}", where) from None
    if not inside:
        raise DesignError(f"the weights path leads outside the design's folder '{home}'", where)
    return path


def design_to_dict(design: Design) -> dict:
    graph = design.graph
    data: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": graph.name}
    data["inputs"] = {name: list(graph.nodes[name].attrs["shape"]) for name in graph.inputs}
    nodes = []
    for node in graph.nodes.values():
        if node.op in ("Input", "Output"):
            continue
        entry: dict[str, Any] = {"name": node.name, "op": node.op, "inputs": list(node.inputs)}
        if node.attrs:
            entry["attrs"] = dict(node.attrs)
        if node.share:
            entry["share"] = node.share
        nodes.append(entry)
    data["nodes"] = nodes
    data["outputs"] = {name: graph.nodes[name].inputs[0] for name in graph.outputs}
    if graph.groups:
        data["groups"] = [g.as_dict() for g in graph.groups.values()]
    if design.training:
        data["training"] = design.training
    if design.weights:
        data["weights"] = design.weights
    if graph.layout:
        data["layout"] = {k: [round(float(x), 2), round(float(y), 2)] for k, (x, y) in graph.layout.items() if k in graph.nodes}
    return data


def _one_per_line(objects: list[dict]) -> str:
    """JSON objects one per line, as `json.dumps` writes each: encoded in one pass and split between objects, where
    '}, {' stands; item by item when a string inside holds that text too."""
    text = json.dumps(objects, ensure_ascii=False)[1:-1]
    if text.count("}, {") != len(objects) - 1:
        return ",\n".join(f"    {json.dumps(n, ensure_ascii=False)}" for n in objects)
    return "    " + text.replace("}, {", "},\n    {")


def dumps(design: Design) -> str:
    """Canonical text: top level indented, one line per node and per layout entry."""
    data = design_to_dict(design)
    lines = ["{"]
    items = list(data.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("nodes", "groups"):
            body = "[\n" + _one_per_line(value) + "\n  ]" if value else "[]"
        elif key in ("layout", "inputs", "outputs"):
            inner = [f"    {json.dumps(k, ensure_ascii=False)}: {json.dumps(v)}" for k, v in value.items()]
            body = "{\n" + ",\n".join(inner) + "\n  }" if inner else "{}"
        elif key == "training":
            body = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        else:
            body = json.dumps(value, ensure_ascii=False)
        lines.append(f"  {json.dumps(key)}: {body}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _file_mode(path: Path) -> int:
    """The permissions the written file should get: the existing file's, else the umask's default."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename over `path`."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if not folder.is_dir():
            raise DesignError("folder does not exist", f"file '{path}'")
        if path.is_dir():
            raise DesignError("is a folder; give a file name", f"file '{path}'")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise DesignError(f"cannot write: {e.strerror or e}", f"file '{path}'") from None
    try:
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DesignError(f"cannot write: {e.strerror or e}", f"file '{path}'") from None
        raise


def save(design: Design, path: Path | str) -> None:
    verify(design.graph)
    if design.graph.groups:  # a saved file must load: its groups pass the checks loading makes
        check_groups([g.as_dict() for g in design.graph.groups.values()], design.graph.nodes)
    write_atomic(path, dumps(design))
    design.path = Path(path)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object's members; a name given twice (two inputs called 'x') is an error, not a silent overwrite."""
    out = dict(pairs)
    if len(out) < len(pairs):  # a name came twice: report the first repeat
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DesignError(f"duplicate key '{key}' in one JSON object")
            seen.add(key)
    return out


class LongNumber:
    """A JSON integer literal with more digits than Python converts (sys.get_int_max_str_digits, 4300 by default).

    It is read as this marker, which is no number, so the validation of the field holding it refuses it and names that field.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"a {self.digits:,}-digit number"


def _parse_int(text: str) -> int | LongNumber:
    try:
        return int(text)
    except ValueError:
        return LongNumber(len(text.lstrip("-")))


def _members(data: Any) -> tuple[int, int]:
    """How many members the objects of a design file's JSON value hold, counting only those found without visiting every
    value (nodes and their attrs, layout, and all of the smaller sections): never more than there are. Also the colons in
    the names and strings of what it visits one by one (a design's name, its outputs' references "node:k", training
    fields, groups): never more than the text writes as such, unless an escape writes one."""
    if type(data) is not dict:
        return 0, 0
    count, colons = len(data), sum(key.count(":") for key in data)
    stack = []
    for key, value in data.items():
        if key == "nodes" and type(value) is list:
            try:  # counted in C; dict's own methods refuse an entry, or an entry's attrs, that is not an object
                attrs = list(map(dict.get, value, itertools.repeat("attrs")))
                count += sum(map(len, value)) + sum(map(dict.__len__, filter(None, attrs)))
            except TypeError:
                pass
        elif key == "layout" and type(value) is dict:
            count += len(value)
        else:
            stack.append(value)
    while stack:
        value = stack.pop()
        if type(value) is dict:
            count += len(value)
            colons += sum(key.count(":") for key in value)
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
        elif type(value) is str:
            colons += value.count(":")
    return count, colons


def _reference_colons(data: Any) -> int:
    """The colons in the nodes' input references ("node:k"), counted in C; 0 when the nodes are not objects whose inputs
    hold only strings."""
    nodes = data.get("nodes") if type(data) is dict else None
    if type(nodes) is not list:
        return 0
    try:
        return "\n".join(itertools.chain.from_iterable(filter(None, map(dict.get, nodes, itertools.repeat("inputs"))))).count(":")
    except TypeError:
        return 0


def _parse(text: str) -> Any:
    """The JSON value of `text`, refusing a name given twice in one object (`_unique_keys`).

    Parsed first without the check, which builds objects in C: when every colon in the text is accounted for by a member
    `_members` counts, or by a string that holds it (an input reference, or a name or string outside the nodes and the layout:
    a colon written as such, no escape can make one), no object lost a member to a repeat (each member has a colon; other
    colons are inside strings). Otherwise, or when that parse fails, the text is parsed again member by member, which names
    the repeat or the error.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        pass
    else:
        (members, in_strings), colons = _members(data), text.count(":")
        if members == colons:
            return data
        if "\\u003a" not in text and "\\u003A" not in text and members == colons - in_strings - _reference_colons(data):
            return data
    return json.loads(text, object_pairs_hook=_unique_keys)


@paused_gc()
def loads(text: str, source: str = "<string>") -> Design:
    where_file = f"in {source}"
    try:
        try:
            data = _parse(text)
        except ValueError as e:
            if isinstance(e, json.JSONDecodeError):
                raise
            data = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_parse_int)  # an integer too long to convert
    except json.JSONDecodeError as e:
        raise DesignError(f"malformed JSON: {e.msg} (line {e.lineno} column {e.colno})", f"file {source}") from None
    except RecursionError:
        raise DesignError("malformed JSON: nested too deeply", f"file {source}") from None
    except DesignError as e:
        raise DesignError(e.what, f"file {source}") from None
    except ValueError as e:  # any other literal Python refuses to convert
        raise DesignError(f"malformed JSON: {str(e)[:120]}", f"file {source}") from None
    try:
        design = design_from_dict(data)
    except DesignError as e:
        raise type(e)(e.what, f"{e.where} {where_file}".strip()) from None
    keep_built(design.graph)
    return design


def load(path: Path | str) -> Design:
    path = Path(path)
    if not path.exists():
        raise DesignError("no such file", f"file '{path}'")
    if path.is_dir():
        raise DesignError("is a folder, not a design file", f"file '{path}'")
    if not path.is_file():
        raise DesignError("a design must be a regular file (this is a device, FIFO or socket)", f"file '{path}'")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DesignError(f"cannot read: {e}", f"file '{path}'") from None
    design = loads(text, f"'{path}'")
    design.path = path
    return design


def _known_ref(graph: Graph, ref: str) -> bool:
    """Whether `ref` is a well-formed reference to a node already in `graph` (a file's Output nodes come after its nodes)."""
    name, _, index = ref.rpartition(":")
    return name in graph.nodes and index.isascii() and index.isdigit() if name else ref in graph.nodes


def _bad_inputs(name: str, index: int) -> DesignError:
    return DesignError("inputs must be a list of node names", f"node '{name}' (nodes[{index}]) field inputs")


def _expect(cond: bool, what: str, where: str) -> None:
    if not cond:
        raise DesignError(what, where)


def design_from_dict(data: Any) -> Design:
    """Build and validate a Design; errors name the JSON field (e.g. nodes[3].attrs.kernel_size)."""
    _expect(isinstance(data, dict), "a design must be a JSON object", "top level")
    _expect(data.get("format") == FORMAT, f"format must be '{FORMAT}', got {data.get('format')!r}", "field format")
    version = data.get("version")
    _expect(type(version) is int and version == VERSION, f"unsupported version {version!r} (this ConvStudio reads version {VERSION})", "field version")
    for key in data:
        _expect(key in TOP_LEVEL, f"unknown field '{key}'", f"field {key}")
    name = data.get("name", "design")
    _expect(isinstance(name, str), "name must be a string", "field name")
    graph = Graph(name)

    inputs = data.get("inputs")
    _expect(isinstance(inputs, dict) and inputs, "inputs must be an object mapping names to shapes, e.g. {\"x\": [3, 224, 224]}", "field inputs")
    for in_name, shape in inputs.items():
        _expect(isinstance(shape, list), f"shape must be a list of integers, got {shape!r}", f"field inputs.{in_name}")
        try:
            graph.add("Input", name=in_name, attrs={"shape": shape})
        except DesignError as e:
            raise type(e)(e.what, f"field inputs.{in_name}") from None

    nodes = data.get("nodes")
    _expect(isinstance(nodes, list), "nodes must be a list", "field nodes")
    pending = []
    known = graph.nodes
    plain = graph.add_plain(nodes)  # the common case in one pass; from the first other entry on, node by node
    for i, entry in enumerate(itertools.islice(nodes, plain, None), plain):  # messages are formatted only on failure
        if not isinstance(entry, dict):
            raise DesignError("each node must be an object", f"field nodes[{i}]")
        if not NODE_FIELDS.issuperset(entry):
            key = next(key for key in entry if key not in NODE_FIELDS)
            raise DesignError(f"unknown node field '{key}'", f"field nodes[{i}].{key}")
        node_name = entry.get("name")
        if not isinstance(node_name, str):
            raise DesignError("node needs a string name", f"field nodes[{i}].name")
        op = entry.get("op")
        if not isinstance(op, str):
            raise DesignError("node needs an op", f"node '{node_name}' (nodes[{i}]) field op")
        if op in ("Input", "Output"):
            raise DesignError(f"{op} nodes are declared in '{op.lower()}s', not in 'nodes'", f"node '{node_name}' (nodes[{i}]) field op")
        refs = entry.get("inputs", [])
        if not isinstance(refs, list):
            raise _bad_inputs(node_name, i)
        direct = True  # producers listed earlier: connect now, not in a second pass
        for ref in refs:
            if not isinstance(ref, str):
                raise _bad_inputs(node_name, i)
            if direct and ref not in known:
                direct = _known_ref(graph, ref)
        share = entry.get("share")
        if not (share is None or isinstance(share, str)):
            raise DesignError("share must be a group name", f"node '{node_name}' (nodes[{i}]) field share")
        try:
            graph.add(op, refs if direct else [None] * len(refs), node_name, entry.get("attrs"), None, share)
        except DesignError as e:
            where = f"node '{node_name}' (nodes[{i}])"
            raise type(e)(e.what, e.where.replace(f"node '{node_name}'", where) if e.where else where) from None
        if not direct:
            pending.append((node_name, refs, i))

    outputs = data.get("outputs")
    _expect(isinstance(outputs, dict) and outputs, "outputs must be an object mapping output names to node names", "field outputs")
    for out_name, ref in outputs.items():
        _expect(isinstance(ref, str), f"output must name a node, got {ref!r}", f"field outputs.{out_name}")
        producer = known.get(ref)
        if producer is not None and producer.op != "Output":  # connected at once, keeping the graph's cached order
            graph.add("Output", [ref], name=out_name)
        else:
            graph.add("Output", [None], name=out_name)
            pending.append((out_name, [ref], None))

    for node_name, refs, i in pending:
        for k, ref in enumerate(refs):
            try:
                graph.set_input(node_name, k, ref)
            except DesignError as e:
                where = f"field outputs.{node_name}" if i is None else f"node '{node_name}' (nodes[{i}])"
                raise GraphError(e.what, f"{where} input {k}") from None

    layout = data.get("layout", {})
    _expect(isinstance(layout, dict), "layout must map node names to [x, y]", "field layout")
    for key, pos in layout.items():
        ok = isinstance(pos, list) and len(pos) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pos)
        _expect(ok, "position must be [x, y]", f"field layout.{key}")
        _expect(key in graph.nodes, f"layout names unknown node '{key}'", f"field layout.{key}")
        graph.layout[key] = (pos[0], pos[1])

    graph.groups = check_groups(data.get("groups", []), graph.nodes)
    training = data.get("training", {})
    validate_training(training, "field training")
    weights = data.get("weights")
    _expect(weights is None or (isinstance(weights, str) and weights), "weights must be a file name", "field weights")
    verify(graph, built=True, checked=len(inputs) + plain)  # `add` and `set_input` checked names, attributes and references above
    return Design(graph, training, weights)
