"""The registry of providers the local stack can play, and starting their simulators.

One entry per provider: its ``SimulatedSource`` (in the provider's simulator package, module
``source``). ``python -m local`` and ``make demo`` read nothing else to know the providers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from local.simulation import SimulatedSource
from local.simulators.ccc.source import SimulatedCcc
from local.simulators.dypls.source import SimulatedDypls
from local.simulators.pbx.source import SimulatedPbx

SIMULATIONS: dict[str, type[SimulatedSource]] = {
    simulation.provider: simulation for simulation in (SimulatedPbx, SimulatedCcc, SimulatedDypls)
}


def simulation_for(raw: Mapping[str, Any]) -> SimulatedSource | None:
    """The simulation of a source document: None for a real provider (or an unknown one)."""
    simulation = SIMULATIONS.get(str(raw.get("provider")))
    return simulation.for_source(raw) if simulation is not None else None


def start_simulators(sources: Iterable[Mapping[str, Any]]) -> dict[str, SimulatedSource]:
    """Start one simulator per loopback source; returns them by source id."""
    started: dict[str, SimulatedSource] = {}
    try:
        for raw in sources:
            simulation = simulation_for(raw)
            if simulation is not None:
                simulation.simulator.start()
                started[simulation.source_id] = simulation
    except BaseException:
        stop_simulators(started)
        raise
    return started


def stop_simulators(simulations: Mapping[str, SimulatedSource]) -> None:
    for simulation in simulations.values():
        simulation.simulator.stop()
