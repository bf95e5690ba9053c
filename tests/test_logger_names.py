"""One logger hierarchy: every module logs under its own module name (`agent.…`, `mcp_bridge.…`), so one
`logging.getLogger("agent")` or `("mcp_bridge")` setting reaches all of a side's messages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _logger_names(path: Path) -> list[str]:
    """The source text of the argument of every `logging.getLogger(...)` call made at import time."""
    names = []
    for node in ast.parse(path.read_text()).body:
        value = getattr(node, "value", None)
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "getLogger"
            and value.args
        ):
            names.append(ast.unparse(value.args[0]))
    return names


def test_every_module_logger_is_named_after_its_module() -> None:
    found = {
        str(path.relative_to(ROOT)): _logger_names(path)
        for package in ("agent", "mcp_bridge")
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert sum(len(names) for names in found.values()) > 20  # the check sees the module loggers
    assert {path: names for path, names in found.items() if any(n != "__name__" for n in names)} == {}
