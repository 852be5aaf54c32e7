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


# -- the basf2-bound part, driven by minimal stand-ins for basf2, simulation and ROOT -------

class _Module:
    """basf2.Module stand-in: a name and the lifecycle hooks."""

    def __init__(self):
        self._name = type(self).__name__

    def set_name(self, name):
        self._name = name

    def name(self):
        return self._name


class _Path:
    def __init__(self):
        self._modules = []

    def add_module(self, module):
        if isinstance(module, str):
            module = FakeModule(module)
        self._modules.append(module)

    def modules(self):
        return list(self._modules)


class _Store:
    """What the module touches of ROOT.Belle2's DataStore / PyStoreArray / PyStoreObj."""

    c_Persistent, c_DontWriteOut = "persistent", "dontwriteout"
    objects: dict = {}
    registered: list = []
    array: list = []


class _StoreObj:
    def __init__(self, name, durability=None):
        self._obj = _Store.objects.get(name)

    def isValid(self):
        return self._obj is not None

    def getExtensionName(self):
        return self._obj["extension"]

    def obj(self):
        return self._obj


class _DigitArray(list):
    def Clear(self):
        self.clear()


class _StoreArray:
    def __init__(self, name, durability=None):
        self.name = name

    def registerInDataStore(self, name):
        _Store.registered.append(name)

    def getPtr(self):
        return _Store.array

    def appendNew(self):
        _Store.array.append(None)


class _Fatal(Exception):
    """basf2's B2FATAL ends the process; the stand-in raises this."""


class _EventMeta:
    def __init__(self, exp, run):
        self._exp, self._run = exp, run

    def getExperiment(self):
        return self._exp

    def getRun(self):
        return self._run


@pytest.fixture
def fake_basf2(monkeypatch):
    import importlib
    import sys
    import types

    log = []
    basf2 = types.ModuleType("basf2")
    basf2.Module, basf2.Path = _Module, _Path
    basf2.get_random_seed = lambda: "framework-seed-1"
    basf2.B2INFO = lambda msg: log.append(("INFO", msg))

    def fatal(msg):
        log.append(("FATAL", msg))
        raise _Fatal(msg)

    basf2.B2FATAL = fatal
    simulation = types.ModuleType("simulation")

    def add_simulation(path, bkgfiles=None):
        overlay = ["BGOverlayInput"] if bkgfiles else []
        for name in ["FullSim", *overlay, "PXDDigitizer", "BGOverlayExecutor"]:
            path.add_module(name)

    simulation.add_simulation = add_simulation
    root = types.ModuleType("ROOT")
    belle2 = types.ModuleType("ROOT.Belle2")
    belle2.DataStore, belle2.PyStoreArray, belle2.PyStoreObj = _Store, _StoreArray, _StoreObj
    belle2.VxdID = lambda layer, ladder, sensor: (layer, ladder, sensor)
    belle2.PXDDigit = lambda vxdid, u, v, q: (vxdid, u, v, q)
    root.Belle2 = belle2
    for name, mod in (("basf2", basf2), ("simulation", simulation), ("ROOT", root), ("ROOT.Belle2", belle2)):
        monkeypatch.setitem(sys.modules, name, mod)
    _Store.objects, _Store.registered, _Store.array = {}, [], _DigitArray()
    module = importlib.reload(adapter)
    yield module, log
    monkeypatch.undo()
    importlib.reload(adapter)  # back to the basf2-less module for the other tests


def test_inject_simulation_puts_the_module_after_bgoverlayinput(fake_basf2):
    module, _ = fake_basf2
    gen = _Module()
    gen.set_name("PXDBackgroundGenerator")
    path = _Path()
    module.inject_simulation(gen)(path, bkgfiles=["bg.root"])
    assert [m.name() for m in path.modules()] == ["FullSim", "BGOverlayInput", "PXDBackgroundGenerator",
                                                   "PXDDigitizer", "BGOverlayExecutor"]
    with pytest.raises(ValueError, match="no BGOverlayInput"):
        module.inject_simulation(gen)(_Path())  # no background files: nowhere to put it
    with pytest.raises(TypeError):
        module.inject_simulation("PXDBackgroundGenerator")
    import sys

    assert module.inject_simulation(None) is sys.modules["simulation"].add_simulation


def test_basf2_module_fills_the_overlay_collection(fake_basf2, tmp_path):
    import torch

    from pxdbg.models.loading import save_generator
    from pxdbg.module import seed_from_framework

    from tests.pxdbg.tiny_models import tiny_convnet

    torch.set_num_threads(1)
    module, log = fake_basf2
    ckpt = save_generator(tmp_path / "tiny.safetensors", "convnet", tiny_convnet(1))
    with pytest.raises(ValueError, match="invalid `model`"):
        module.PXDBackgroundGeneratorModule(model="gan")  # validated when the path is built
    m = module.PXDBackgroundGeneratorModule(checkpoint=ckpt)
    assert m.name() == "PXDBackgroundGenerator"

    with pytest.raises(_Fatal, match="BGOverlayInput"):
        m.initialize()  # no BGOverlayInput before it in the path

    _Store.objects = {"BackgroundInfo": {"extension": "_beamBG"}, "EventMetaData": _EventMeta(0, 3)}
    m = module.PXDBackgroundGeneratorModule(checkpoint=ckpt)
    m.initialize()
    assert _Store.registered[-1] == "PXDDigits_beamBG"
    assert m.generator.used_seed == seed_from_framework("framework-seed-1")  # basf2's derivation
    assert ("INFO", f"PXD background generator seed initialized to {m.generator.used_seed}") in log
    m.beginRun()
    _Store.array.extend(["digit read by BGOverlayInput"] * 3)
    m.event()
    stored = list(_Store.array)
    m.terminate()

    # Exactly the generator's first event, as basf2 PXDDigit(VxdID, u, v, charge) objects.
    from pxdbg.module import PXDBackgroundGenerator

    ref = PXDBackgroundGenerator(checkpoint=ckpt, framework_seed="framework-seed-1")
    ref.initialize()
    digits = ref.event()
    assert len(stored) == len(digits) > 0
    assert stored == [(module.VXDID_ARGS[s], u, v, q) for s, u, v, q in zip(*module.digit_rows(digits))]
