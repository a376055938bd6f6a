"""Dotted field paths over JSON-like data, with ``[]`` for "each element of this list".

Notation: ``agent.id`` is key ``id`` of the object under ``agent``; ``items[].agent_id`` is key
``agent_id`` of every object in the list ``items``; ``orders[].lines[].sku`` nests. A trailing
``[]`` (``tags[]``) means each element itself and is only meaningful for in-place rules. Keys
containing ``.`` or ``[]`` can't be addressed.

Values found under ``[]`` steps come back as a ``_Many`` (one entry per element, ``MISSING`` where
the element has no such field) so that a later ``place`` can put them back element by element,
and so that a list that *is* a field's value is never confused with one produced by ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.transform.errors import TransformationError

Step = tuple[str, bool]  # (key, each): "items[]" -> ("items", True)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Many(list):  # type: ignore[type-arg]
    """Per-element results of a ``[]`` step."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class FieldPath:
    text: str
    steps: tuple[Step, ...]
    simple: bool  # a single plain key, the common case: handled without walking

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.steps)

    @property
    def each_count(self) -> int:
        return sum(1 for _, each in self.steps if each)

    @property
    def trailing_each(self) -> bool:
        return self.steps[-1][1]

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> FieldPath:
    if not isinstance(text, str) or not text:
        raise ValueError("a field path can't be empty")
    steps: list[Step] = []
    for part in text.split("."):
        each = part.endswith("[]")
        key = part[:-2] if each else part
        if not key or "[" in key or "]" in key:
            raise ValueError(f"bad field path {text!r}: use dotted keys, with [] after a list's key")
        steps.append((key, each))
    return FieldPath(text, tuple(steps), len(steps) == 1 and not steps[0][1])


def json_copy(value: Any) -> Any:
    # Much faster than copy.deepcopy for the only shapes a JSON body has.
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def present(tree: Any) -> bool:
    """Whether an ``extract`` result holds at least one value."""
    if tree is MISSING:
        return False
    if isinstance(tree, _Many):
        return any(present(t) for t in tree)
    return True


def map_tree(tree: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(tree, _Many):
        return _Many(map_tree(t, fn) for t in tree)
    return tree if tree is MISSING else fn(tree)


def extract(obj: Any, path: FieldPath, pop: bool = False) -> Any:
    """The value(s) at ``path``; with ``pop``, remove them, and drop the objects and lists that
    this leaves empty so that moving ``agent.id`` out doesn't leave ``"agent": {}`` behind."""
    if path.simple:
        if not isinstance(obj, dict):
            return MISSING
        return obj.pop(path.text, MISSING) if pop else obj.get(path.text, MISSING)
    return _extract(obj, path.steps, 0, pop)


def _extract(obj: Any, steps: tuple[Step, ...], i: int, pop: bool) -> Any:
    if not isinstance(obj, dict):
        return MISSING
    key, each = steps[i]
    child = obj.get(key, MISSING)
    if child is MISSING:
        return MISSING
    last = i + 1 == len(steps)
    if last and not each:
        if pop:
            del obj[key]
        return child
    if not each:
        found = _extract(child, steps, i + 1, pop)
        if pop and found is not MISSING and isinstance(child, dict) and not child:
            del obj[key]
        return found
    if not isinstance(child, list):
        return MISSING
    if last:
        # "tags[]" as a whole: the elements themselves.
        if pop:
            del obj[key]
        return _Many(child)
    found = _Many(_extract(el, steps, i + 1, pop) for el in child)
    # A list left with nothing but empty objects moves as a whole: ``place`` rebuilds it,
    # element for element, at the target.
    if pop and all(isinstance(el, dict) and not el for el in child):
        del obj[key]
    return found


def place(obj: dict[str, Any], path: FieldPath, tree: Any) -> None:
    """Put an ``extract`` result at ``path`` (same number of ``[]``), creating objects on the
    way, and lists with one object per source element (so a list's shape survives a mapping
    even where its elements lack the field). An existing value in the way that isn't an object,
    or a list of the same length, is an error rather than something to overwrite silently."""
    if path.simple:
        obj[path.text] = tree
        return
    _place(obj, path, 0, tree)


def _place(obj: dict[str, Any], path: FieldPath, i: int, tree: Any) -> None:
    key, each = path.steps[i]
    last = i + 1 == len(path.steps)
    if not each:
        if last:
            obj[key] = tree
            return
        child = obj.get(key, MISSING)
        if child is MISSING:
            child = obj[key] = {}
        elif not isinstance(child, dict):
            raise _in_the_way(path, i, "an object")
        _place(child, path, i + 1, tree)
        return
    if last:
        obj[key] = list(tree)
        return
    child = obj.get(key, MISSING)
    if child is MISSING:
        child = obj[key] = [{} for _ in tree]
    elif not present(tree):
        return  # nothing to write into a list that is already there
    elif not isinstance(child, list) or len(child) != len(tree):
        raise _in_the_way(path, i, f"a list of {len(tree)} objects")
    for el, sub in zip(child, tree):
        if sub is MISSING:
            continue
        if not isinstance(el, dict):
            if not present(sub):
                continue
            raise _in_the_way(path, i, "a list of objects")
        _place(el, path, i + 1, sub)


def _in_the_way(path: FieldPath, i: int, expected: str) -> TransformationError:
    at = ".".join(k + ("[]" if e else "") for k, e in path.steps[: i + 1])
    return TransformationError(f"can't write {path.text!r}: {at!r} is not {expected}", field=path.text)


def locations(obj: Any, path: FieldPath, create: bool = False) -> list[tuple[Any, Any]]:
    """Every (container, key) the path designates, for in-place edits: (dict, key) for a field,
    whether or not it is set, and (list, index) under a trailing ``[]``. With ``create``, missing
    objects on the way are made (lists never are: ``[]`` means each element that exists)."""
    if path.simple:
        return [(obj, path.text)] if isinstance(obj, dict) else []
    out: list[tuple[Any, Any]] = []
    _locate(obj, path, 0, create, out)
    return out


def _locate(obj: Any, path: FieldPath, i: int, create: bool, out: list[tuple[Any, Any]]) -> None:
    if not isinstance(obj, dict):
        return
    key, each = path.steps[i]
    last = i + 1 == len(path.steps)
    if not each:
        if last:
            out.append((obj, key))
            return
        child = obj.get(key, MISSING)
        if child is MISSING:
            if not create:
                return
            child = obj[key] = {}
        elif not isinstance(child, dict):
            if create:
                raise _in_the_way(path, i, "an object")
            return
        _locate(child, path, i + 1, create, out)
        return
    child = obj.get(key)
    if not isinstance(child, list):
        return
    if last:
        out.extend((child, n) for n in range(len(child)))
        return
    for el in child:
        _locate(el, path, i + 1, create, out)


def get_at(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        return container.get(key, MISSING)
    return container[key]


def apply_to_objects(data: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Transform a JSON object, or each object of a top-level array (a collection answer);
    scalars have no fields and pass through."""
    if isinstance(data, dict):
        return fn(data)
    if isinstance(data, list):
        return [fn(el) if isinstance(el, dict) else el for el in data]
    return data


def check_field_mappings(field_mappings: Mapping[str, str]) -> tuple[tuple[FieldPath, FieldPath], ...]:
    """Parse and validate a mapping's fields; raises ValueError naming the offending path.

    Sources must not overlap (``agent`` and ``agent.id``), nor targets, so the mapping is a
    bijection between disjoint fields: that is what makes it invertible and order-independent.
    """
    if not isinstance(field_mappings, Mapping):
        raise ValueError("field mappings must be a mapping of source path to target path")
    pairs: list[tuple[FieldPath, FieldPath]] = []
    for src_text, dst_text in field_mappings.items():
        src, dst = parse_path(src_text), parse_path(dst_text)
        for p in (src, dst):
            if p.trailing_each:
                raise ValueError(f"{p.text!r}: a trailing [] can't be mapped; map the list's own key")
        if src.each_count != dst.each_count:
            raise ValueError(f"{src.text!r} -> {dst.text!r}: both sides need the same number of []")
        pairs.append((src, dst))
    for side, name in ((0, "source"), (1, "target")):
        seen: list[FieldPath] = []
        for pair in pairs:
            p = pair[side]
            for q in seen:
                short, long_ = sorted((p.keys, q.keys), key=len)
                if long_[: len(short)] == short:
                    raise ValueError(f"{name} fields {q.text!r} and {p.text!r} overlap")
            seen.append(p)
    return tuple(pairs)
