"""PXDBackgroundGenerator: validation, seeding, checkpoint switching at IoV boundaries."""

import hashlib
import struct

import numpy as np
import pytest
import torch

from pxdbg.digits import PXDDigits
from pxdbg.models import get_model
from pxdbg.models.loading import save_generator
from pxdbg.module import PXDBackgroundGenerator, seed_from_framework
from registry.checkpoint import ResolvedCheckpoint, read_manifest
from registry.exceptions import CheckpointMismatchError, ManifestMismatchError, UnsafeCheckpointError

from tests.pxdbg.tiny_models import tiny_convnet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    a = save_generator(d / "a.safetensors", "convnet", tiny_convnet(1), campaign="A")
    b = save_generator(d / "b.safetensors", "convnet", tiny_convnet(2), campaign="B")
    r = save_generator(d / "r.safetensors", "resnet", get_model("resnet").Model(width=1 / 16))
    return {"A": a, "B": b, "resnet": r}


class IoVResolver:
    """Runs 1..5 of exp 0 -> checkpoint A, runs >= 6 -> B (two IoVs); counts calls."""

    def __init__(self, checkpoints):
        self.checkpoints = checkpoints
        self.calls = []

    def __call__(self, model, exp, run, campaign, globaltag):
        self.calls.append((model, exp, run, campaign, globaltag))
        name = "A" if run <= 5 else "B"
        path = self.checkpoints[name]
        return ResolvedCheckpoint(path, read_manifest(path), ("PXDBackgroundGenerator_convnet", name))


def _same(a: PXDDigits, b: PXDDigits) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("sensor", "ucell", "vcell", "charge"))


def test_digits_are_well_formed(checkpoints):
    gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=1)
    gen.initialize()
    gen.begin_run(0, 1)
    digits = gen.event()
    digits.validate()  # sorted, unique, in range, charge >= 1
    assert len(digits) > 0
    assert digits.sensor.dtype == np.uint8 and digits.charge.dtype == np.uint8
    assert set(np.unique(digits.sensor)) <= set(range(40))
    lls = digits.layer_ladder_sensor
    assert lls.shape == (len(digits), 3) and set(np.unique(lls[:, 0])) <= {1, 2}
    assert gen.stats.events == 1 and gen.stats.loads == 1
    gen.terminate()


def test_identical_seeds_identical_events(checkpoints):
    def run(seed, batched=False):
        gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=seed)
        gen.initialize()
        gen.begin_run(0, 1)
        return gen.events(2) if batched else [gen.event(), gen.event()]

    first, batched = run(42), run(42, batched=True)
    assert all(_same(a, b) for a, b in zip(first, batched))
    assert not _same(first[0], first[1])
    assert not _same(first[0], run(43)[0])


def test_seed_derived_from_framework_seed_like_basf2(checkpoints):
    digest = hashlib.sha512(b"basf2-seed-17").digest()
    assert seed_from_framework("basf2-seed-17") == struct.unpack(">q", digest[:8])[0]
    assert seed_from_framework(17) == struct.unpack(">q", hashlib.sha512(b"17").digest()[:8])[0]
    gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], framework_seed="basf2-seed-17")
    gen.initialize()
    assert gen.used_seed == seed_from_framework("basf2-seed-17")
    explicit = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=gen.used_seed)
    explicit.initialize()
    assert _same(gen.event(), explicit.event())


def test_checkpoint_switches_at_iov_boundary_and_only_there(checkpoints):
    resolver = IoVResolver(checkpoints)
    gen = PXDBackgroundGenerator(model="convnet", seed=5, resolver=resolver, campaign="mixed")
    gen.initialize()
    assert gen.stats.loads == 0  # nothing to load before the run is known
    with pytest.raises(RuntimeError, match="no checkpoint loaded"):
        gen.event()
    events = {}
    for run in (1, 5, 6, 7):
        gen.begin_run(0, run)
        events[run] = gen.event()
        assert gen.manifest.campaign == ("A" if run <= 5 else "B")
    assert gen.stats.loads == 2, "one load per IoV, none inside an IoV"
    assert [c[2] for c in resolver.calls] == [1, 5, 6, 7]
    assert resolver.calls[0][3:] == ("mixed", "PXDBackgroundGenerator")
    gen.begin_run(0, 3)  # back into the first IoV: reload A
    assert gen.stats.loads == 3 and gen.manifest.campaign == "A"

    # The switch changes the weights, not the random stream: a job that uses B from
    # the start produces the same 3rd event as the job that switched to B for it.
    only_b = PXDBackgroundGenerator(checkpoint=checkpoints["B"], seed=5)
    only_b.initialize()
    only_b.skip_events(2)
    assert _same(only_b.event(), events[6])


def test_resolver_may_return_path_and_manifest(checkpoints):
    calls = []

    def resolver(model, exp, run, campaign, globaltag):
        calls.append(run)
        return checkpoints["A"], read_manifest(checkpoints["A"])

    gen = PXDBackgroundGenerator(model="convnet", seed=1, resolver=resolver)
    gen.initialize()
    gen.begin_run(0, 1)
    gen.begin_run(0, 2)
    assert gen.stats.loads == 1 and calls == [1, 2]


def test_wrong_model_checkpoint_refused_before_generation(checkpoints, tmp_path):
    gen = PXDBackgroundGenerator(model="resnet", checkpoint=checkpoints["A"], seed=1)
    with pytest.raises(ManifestMismatchError, match="model 'convnet'.*model 'resnet'"):
        gen.initialize()
    assert gen.stats.events == 0 and gen._model is None

    gen = PXDBackgroundGenerator(model="ieagan", seed=1, resolver=IoVResolver(checkpoints))
    gen.initialize()
    with pytest.raises(ManifestMismatchError):
        gen.begin_run(0, 1)
    assert gen.stats.events == 0

    legacy = tmp_path / "resnet.pth"
    torch.save(get_model("resnet").Model(width=1 / 16).state_dict(), legacy)
    gen = PXDBackgroundGenerator(model="convnet", checkpoint=legacy, seed=1)
    with pytest.raises(CheckpointMismatchError, match="missing: features"):
        gen.initialize()


def test_pickled_checkpoint_with_code_refused(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": Evil()}, path)
    gen = PXDBackgroundGenerator(checkpoint=path, seed=1)
    with pytest.raises(UnsafeCheckpointError):
        gen.initialize()
    assert not marker.exists()


def test_legacy_basf2_state_dict_is_usable(tmp_path):
    model = tiny_convnet(3)
    path = tmp_path / "convnet.pth"
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    # A legacy file has no manifest and so no model_config: it is the full-size basf2
    # architecture, and this reduced one does not fit.
    gen = PXDBackgroundGenerator(checkpoint=path, seed=1)
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        gen.initialize()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"model": 1}, TypeError, "`model` must be a str"),
    ({"model": "gan"}, ValueError, "invalid `model` 'gan'"),
    ({"checkpoint": 3}, TypeError, "`checkpoint` must be None or a path"),
    ({"checkpoint": "/nonexistent/x.pt"}, ValueError, "is not an existing file"),
    ({"seed": 1.5}, TypeError, "`seed` must be None or an int"),
    ({"seed": True}, TypeError, "`seed`"),
    ({"seed": 2**63}, ValueError, r"`seed` must be in \[-9223372036854775808, 9223372036854775807\]"),
    ({"nintra": 0}, ValueError, "`nintra` must be >= 1"),
    ({"ninter": "2"}, TypeError, "`ninter` must be an int"),
    ({"globaltag": None}, TypeError, "`globaltag` must be a str"),
    ({"globaltag": ""}, ValueError, "`globaltag` must not be empty"),
    ({"campaign": 5}, TypeError, "`campaign` must be None, a str or a list of str"),
    ({"device": "gpu7"}, ValueError, "invalid `device`"),
    ({"device": 0.5}, TypeError, "`device` must be"),
    ({"resolver": "registry"}, TypeError, "`resolver` must be callable"),
])
def test_parameter_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        PXDBackgroundGenerator(**kwargs)


def test_run_numbers_validated(checkpoints):
    gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=1)
    with pytest.raises(RuntimeError, match="before initialize"):
        gen.begin_run(0, 1)
    gen.initialize()
    with pytest.raises(ValueError, match="`run` must be >= 0"):
        gen.begin_run(0, -1)
    with pytest.raises(TypeError, match="`exp`"):
        gen.begin_run("0", 1)


def test_checkpoint_path_expands_environment_variables(checkpoints, monkeypatch):
    monkeypatch.setenv("PXDBG_TEST_CKPT_DIR", str(checkpoints["A"].parent))
    gen = PXDBackgroundGenerator(checkpoint="$PXDBG_TEST_CKPT_DIR/a.safetensors", seed=1)
    assert gen.checkpoint == checkpoints["A"]


def test_initialize_applies_thread_settings(checkpoints):
    before = torch.get_num_threads()
    try:
        gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=1, nintra=2,
                                     ninter=torch.get_num_interop_threads())
        gen.initialize()
        assert torch.get_num_threads() == 2
        # torch fixes the inter-op thread count once inter-op work has started: another
        # count is then only logged as a warning, never a failure of the job
        PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=1, nintra=1,
                               ninter=torch.get_num_interop_threads() + 1).initialize()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_memory_layout_default_and_override(checkpoints):
    def layout(**kwargs):
        gen = PXDBackgroundGenerator(checkpoint=checkpoints["A"], seed=3, **kwargs)
        gen.initialize()
        weight = gen._model.features[0].weight
        return weight.is_contiguous(memory_format=torch.channels_last), gen.generate_dense(1)

    default_cl, default_events = layout()
    nchw_cl, nchw_events = layout(channels_last=False)
    assert default_cl and not nchw_cl, "convnet on CPU defaults to the measured faster channels-last"
    # The layout changes kernels, not the events: at most a rare 1 ADU truncation flip.
    diff = (default_events.int() - nchw_events.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4
    with pytest.raises(TypeError, match="channels_last"):
        PXDBackgroundGenerator(channels_last="yes")
