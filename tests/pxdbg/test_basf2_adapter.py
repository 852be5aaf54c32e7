"""The framework-free parts of the basf2 adapter (the basf2 class needs a release)."""

import numpy as np
import pytest

from pxdbg import basf2 as adapter
from pxdbg.digits import PXDDigits
from pxdbg.sensors import sensor_index


class FakeModule:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


def test_vxdid_arguments_follow_sensor_order():
    assert len(adapter.VXDID_ARGS) == 40
    assert adapter.VXDID_ARGS[0] == (1, 1, 1) and adapter.VXDID_ARGS[1] == (1, 1, 2)
    assert adapter.VXDID_ARGS[16] == (2, 1, 1) and adapter.VXDID_ARGS[39] == (2, 12, 2)
    for i, triple in enumerate(adapter.VXDID_ARGS):
        assert sensor_index(*triple) == i
        assert all(isinstance(x, int) for x in triple)


def test_generator_goes_right_after_bgoverlayinput():
    names = ["EventInfoSetter", "FullSim", "BGOverlayInput", "PXDDigitizer", "BGOverlayExecutor"]
    modules = [FakeModule(n) for n in names]
    gen = FakeModule("PXDBackgroundGenerator")
    out = adapter.insert_after(modules, gen, lambda m: m.name())
    assert [m.name() for m in out] == names[:3] + ["PXDBackgroundGenerator"] + names[3:]
    assert [m.name() for m in modules] == names  # input untouched


@pytest.mark.parametrize("names, message", [
    (["FullSim", "PXDDigitizer"], "has no BGOverlayInput"),
    (["BGOverlayInput", "BGOverlayInput"], "has 2 BGOverlayInput"),
])
def test_missing_or_ambiguous_overlay_input_is_an_error(names, message):
    with pytest.raises(ValueError, match=message):
        adapter.insert_after([FakeModule(n) for n in names], FakeModule("x"), lambda m: m.name())


def test_collection_name_and_digit_rows():
    assert adapter.background_collection("_beamBG") == "PXDDigits_beamBG"
    with pytest.raises(TypeError):
        adapter.background_collection(None)
    digits = PXDDigits(np.array([0, 39], np.uint8), np.array([1, 249], np.uint16),
                       np.array([2, 767], np.uint16), np.array([7, 255], np.uint8))
    sensor, u, v, q = adapter.digit_rows(digits)
    assert (sensor, u, v, q) == ([0, 39], [1, 249], [2, 767], [7, 255])
    assert all(type(x) is int for col in (sensor, u, v, q) for x in col)


def test_inject_simulation_needs_basf2():
    if adapter._basf2 is not None:  # inside a release: the real thing must work
        pytest.importorskip("simulation")
        assert callable(adapter.inject_simulation(None))
    else:
        with pytest.raises(ImportError, match="basf2 is not available"):
            adapter.inject_simulation(None)
