"""basf2 integration: the generator as a basf2 module feeding background overlay.

In a basf2 simulation path, ``BGOverlayInput`` reads background digits (e.g. into
``PXDDigits_beamBG``) and ``BGOverlayExecutor`` later adds them to the signal digits.
The wrapper module, placed right after ``BGOverlayInput``, replaces the PXD part of that
background collection with generated digits, event by event, exactly where basf2's own
``pxd.background_generator`` puts them. Use::

    from pxdbg.basf2 import PXDBackgroundGeneratorModule, inject_simulation
    add_simulation = inject_simulation(PXDBackgroundGeneratorModule(model="ieagan"))
    add_simulation(path, bkgfiles=files)

The logic lives in framework-free functions below (tested without basf2); only the class
and :func:`inject_simulation` touch basf2, and they exist only where basf2 is importable.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .digits import PXDDigits
from .sensors import SENSOR_IDS

try:  # basf2 and ROOT exist only inside a Belle II software release
    import basf2 as _basf2
except ImportError:  # pragma: no cover - depends on the environment
    _basf2 = None

#: Module after which the generator goes, and whose collection it fills.
OVERLAY_INPUT = "BGOverlayInput"
#: ``(layer, ladder, sensor)`` of each sensor index, the arguments of basf2's ``VxdID``.
VXDID_ARGS: tuple[tuple[int, int, int], ...] = tuple(tuple(int(x) for x in row) for row in SENSOR_IDS)


def background_collection(extension: str) -> str:
    """Name of the background PXD digit collection BGOverlayInput fills, from the
    extension it records in ``BackgroundInfo`` (e.g. ``"_beamBG"``)."""
    if not isinstance(extension, str):
        raise TypeError(f"extension must be a str, got {type(extension).__name__}")
    return f"PXDDigits{extension}"


def digit_rows(digits: PXDDigits) -> tuple[list[int], list[int], list[int], list[int]]:
    """Plain-int columns (sensor index, ucell, vcell, charge) for building basf2
    ``PXDDigit`` objects: one vectorized conversion, no per-digit numpy scalar access."""
    return (digits.sensor.astype(np.int64).tolist(), digits.ucell.astype(np.int64).tolist(),
            digits.vcell.astype(np.int64).tolist(), digits.charge.astype(np.int64).tolist())


def insert_after(modules: Iterable[Any], new: Any, name_of: Callable[[Any], str],
                 anchor: str = OVERLAY_INPUT) -> list[Any]:
    """``modules`` with ``new`` inserted right after the one named ``anchor``.

    ValueError when ``anchor`` is missing (without background overlay the generated
    digits would go nowhere) or appears more than once (ambiguous).
    """
    modules = list(modules)
    names = [name_of(m) for m in modules]
    count = names.count(anchor)
    if count != 1:
        problem = "no" if count == 0 else f"{count}"
        raise ValueError(f"the simulation path has {problem} {anchor} module(s); the PXD background "
                         f"generator needs exactly one (call add_simulation with bkgfiles=...)")
    i = names.index(anchor)
    return modules[: i + 1] + [new] + modules[i + 1:]


#: basf2's own PXDBackgroundGenerator module defaults to this model.
BASF2_DEFAULT_MODEL = "convnet"


def _require_basf2() -> Any:
    if _basf2 is None:
        raise ImportError("basf2 is not available: set up a Belle II software release (b2setup)")
    return _basf2


if _basf2 is not None:  # pragma: no cover - exercised only inside a basf2 release
    class PXDBackgroundGeneratorModule(_basf2.Module):
        """basf2 module: generated PXD background into the overlay's PXDDigits collection.

        Takes the keyword arguments of :class:`pxdbg.module.PXDBackgroundGenerator`; the
        seed defaults to one derived from ``basf2.get_random_seed()`` as basf2 does, and the
        model to basf2's default (``convnet``), so that a steering file written for basf2's
        module behaves the same; pass ``model="sparse"`` for the faithful, fast model.
        """

        def __init__(self, **kwargs: Any):
            super().__init__()
            from .module import PXDBackgroundGenerator

            kwargs.setdefault("model", BASF2_DEFAULT_MODEL)
            self.set_name("PXDBackgroundGenerator")
            self.generator = PXDBackgroundGenerator(**kwargs)  # validates the parameters now

        def initialize(self) -> None:
            from ROOT.Belle2 import DataStore, PyStoreArray, PyStoreObj, VxdID

            if self.generator.seed is None:
                self.generator.framework_seed = _basf2.get_random_seed()
            self.generator.initialize()
            _basf2.B2INFO(f"PXD background generator seed initialized to {self.generator.used_seed}")
            self._vxdids = tuple(VxdID(*args) for args in VXDID_ARGS)
            info = PyStoreObj("BackgroundInfo", DataStore.c_Persistent)
            if not info.isValid():
                _basf2.B2FATAL("the path must contain BGOverlayInput before the PXD background generator")
            self._digits = PyStoreArray("PXDDigits", DataStore.c_DontWriteOut)
            self._digits.registerInDataStore(background_collection(info.getExtensionName()))
            self._event_meta = PyStoreObj("EventMetaData")

        def beginRun(self) -> None:
            meta = self._event_meta.obj()
            self.generator.begin_run(int(meta.getExperiment()), int(meta.getRun()))

        def event(self) -> None:
            from ROOT.Belle2 import PXDDigit

            array = self._digits.getPtr()
            array.Clear()  # drop the PXD digits BGOverlayInput read from the files
            sensor, ucell, vcell, charge = digit_rows(self.generator.event())
            for n, (s, u, v, q) in enumerate(zip(sensor, ucell, vcell, charge)):
                self._digits.appendNew()
                array[n] = PXDDigit(self._vxdids[s], u, v, q)

        def terminate(self) -> None:
            self.generator.terminate()


def inject_simulation(module: Any = None) -> Callable:
    """A drop-in replacement of ``simulation.add_simulation`` that inserts ``module``
    right after ``BGOverlayInput`` (None: the unmodified function)."""
    basf2 = _require_basf2()
    from simulation import add_simulation

    if module is None:
        return add_simulation
    if not isinstance(module, basf2.Module):
        raise TypeError(f"expecting None or a basf2.Module, got {type(module).__name__}")

    @functools.wraps(add_simulation)
    def injected_simulation(path, *args, **kwargs):
        simulation_path = basf2.Path()
        add_simulation(simulation_path, *args, **kwargs)
        for simulation_module in insert_after(simulation_path.modules(), module, lambda m: m.name()):
            path.add_module(simulation_module)

    return injected_simulation


__all__: Sequence[str] = ["VXDID_ARGS", "background_collection", "digit_rows", "insert_after",
                          "inject_simulation", "OVERLAY_INPUT"]
if _basf2 is not None:  # pragma: no cover
    __all__ = [*__all__, "PXDBackgroundGeneratorModule"]
