"""The algorithm registry as a table: each entry's class, backends, presets, what its default preset searches, and
the layers of the networks it offers.

``study_admin algorithms`` prints it; the algorithm table of docs/tuning.md is its Markdown output at
:data:`DOCS_TIMESTEPS` (``tests/test_docs.py`` checks), so the documentation follows the registry.
"""

from __future__ import annotations

from typing import Any

from study_contract.algorithms import ALGORITHMS
from study_contract.algorithms.entry import Network
from study_contract.space import ParamSpec

DOCS_TIMESTEPS = 1_000_000
COLUMNS = ("algorithm", "class", "backends", "presets", "searched", "fixed", "networks")


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(spec: ParamSpec) -> str:
    """How a parameter is searched, in a few words: ``1e-05–0.003 (log)``, ``small / medium``, ``0.99``."""
    if spec.fixed:
        return _value(spec.value)
    if spec.kind == "choice":
        return " / ".join(_value(c) for c in spec.choices)
    scale = {"pow2": " (powers of 2)", "discount": " (as 1 - value, log)"}.get(spec.kind, " (log)" if spec.log else "")
    return f"{_value(spec.low)}–{_value(spec.high)}{scale}"


def _offered(spec: ParamSpec) -> tuple[Any, ...]:
    return (spec.value,) if spec.fixed else spec.choices


def _layers(network: Network) -> str:
    """``64 64``, or ``pi 256 256, qf 1024 1024`` for one list per network."""
    if isinstance(network, dict):
        return ", ".join(f"{part} {' '.join(map(str, widths))}" for part, widths in network.items())
    return " ".join(map(str, network))


def rows(timesteps: int) -> list[dict[str, Any]]:
    """One row per entry: its default preset built for ``timesteps`` env-steps per trial on one env."""
    table = []
    for entry in ALGORITHMS.values():
        space = entry.space(entry.default_space_name, timesteps, 1)
        table.append({
            "algorithm": entry.name,
            "class": f"{entry.library}.{entry.class_name}",
            "backends": list(entry.libraries),
            "presets": list(entry.spaces),
            "searched": {name: describe(spec) for name, spec in space.items() if not spec.fixed},
            "fixed": {name: describe(spec) for name, spec in space.items() if spec.fixed},
            "networks": {name: _layers(entry.networks[name]) for name in _offered(space["net_arch"])},
        })  # fmt: skip
    return table


def _cells(row: dict[str, Any], code: str = "") -> list[str]:
    """A row's cells, names quoted with ``code`` (a backtick in Markdown)."""
    return [f"{code}{row['algorithm']}{code}", f"{code}{row['class']}{code}", ", ".join(row["backends"]),
            ", ".join(row["presets"]),
            *(", ".join(f"{code}{name}{code} {how}" for name, how in row[column].items())
              for column in ("searched", "fixed", "networks"))]  # fmt: skip


def text(timesteps: int) -> str:
    """One block per entry: its class, backends and presets, then each parameter and how it is searched."""
    from study_admin.display import table

    blocks = []
    for row in rows(timesteps):
        head = f"{row['algorithm']}: {row['class']} (backends {', '.join(row['backends'])}; presets " \
               f"{', '.join(row['presets'])})\n"  # fmt: skip
        params = [[f"  {name}", how] for name, how in row["searched"].items()]
        params += [[f"  {name}", f"{how} (fixed)"] for name, how in row["fixed"].items()]
        params += [[f"  net_arch={name}", f"layers {layers}"] for name, layers in row["networks"].items()]
        blocks.append(head + table(params))
    return f"The default preset of each algorithm, for {timesteps:,} env-steps per trial:\n\n" + "\n".join(blocks)


def markdown(timesteps: int) -> str:
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    lines += [f"| {' | '.join(_cells(row, '`'))} |" for row in rows(timesteps)]
    return "\n".join(lines) + "\n"
