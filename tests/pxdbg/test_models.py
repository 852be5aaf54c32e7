"""Generator models: registry, basf2 state-dict compatibility, shapes, seeding, order."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pxdbg.models import available_models, dense_models, get_model, model_kind

MODELS = dense_models()  # the GANs: image models built from a configuration
from pxdbg.models.common import sample_latents
from pxdbg.models.layers import SNConv2d, SNLinear
from pxdbg.sensors import N_SENSORS
from pxdbg.transforms import model_to_adc

torch.set_num_threads(1)

BASF2_KEYS = json.loads((Path(__file__).parents[1] / "data" / "basf2_state_dict_keys.json").read_text())["models"]
TINY = {"convnet": {"width": 1 / 32}, "resnet": {"width": 1 / 16}, "ieagan": {"ch": 2}}


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    models = {}
    for name in MODELS:
        model = get_model(name).Model(**TINY[name]).eval()
        _randomize_norm_stats(model)
        models[name] = model
    return models


def _randomize_norm_stats(model):
    # Fresh BN statistics are identities; random ones make the outputs less trivial.
    g = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith(("running_var", "stored_var")):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "stored_mean")):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)


def test_registry_lists_and_resolves_models():
    assert available_models() == ("sparse", "convnet", "resnet", "ieagan", "sparse-beam")  # the default first
    assert MODELS == ("convnet", "resnet", "ieagan") and model_kind("sparse") == "sparse"
    assert callable(get_model("sparse").load)
    assert model_kind("sparse-beam") == "sparse" and get_model("sparse-beam").NAME == "sparse-beam"
    for name in MODELS:
        module = get_model(name)
        assert issubclass(module.Model, torch.nn.Module)
        assert isinstance(module.ARCHITECTURE_VERSION, int)
    assert get_model("convnet").LATENT_DIM == 96 and get_model("resnet").LATENT_DIM == 96
    assert get_model("ieagan").LATENT_DIM == 128
    assert get_model("convnet").THRESHOLD is None and get_model("resnet").THRESHOLD is None
    assert get_model("ieagan").THRESHOLD == 7
    with pytest.raises(ValueError, match="unknown model 'gan'.*sparse, convnet, resnet, ieagan"):
        get_model("gan")
    with pytest.raises(TypeError):
        get_model(3)


@pytest.mark.parametrize("name", MODELS)
def test_basf2_state_dict_loads_strictly(name):
    """A state dict with exactly the keys and shapes derived from basf2's model code
    (tests/data/derive_basf2_state_dict_keys.py) loads into the default model."""
    spec = BASF2_KEYS[name]
    model = get_model(name).Model()
    reference = model.state_dict()
    state = {}
    for key, shape in spec.items():
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.full(shape, 0.5, dtype=dtype) if dtype != torch.long else torch.tensor(3)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(reference) == set(spec)
    assert all(torch.all(v == 0.5) for k, v in model.state_dict().items() if not k.endswith("tracked"))


@pytest.mark.parametrize("name", ["convnet", "resnet"])  # ieagan: in its sensor-order test
def test_generate_shape_dtype_range(tiny_models, name):
    module = get_model(name)
    events = module.generate(tiny_models[name], torch.Generator().manual_seed(7), n_events=1)
    assert events.shape == (1, N_SENSORS, 250, 768)
    assert events.dtype == torch.uint8
    assert events.device.type == "cpu"
    assert events.any()


@pytest.mark.parametrize("latent_dim", [96, 128])
def test_latent_stream_does_not_depend_on_batching(latent_dim):
    a = sample_latents(torch.Generator().manual_seed(3), 3, latent_dim, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    b = torch.cat([sample_latents(g, 1, latent_dim, torch.device("cpu")) for _ in range(3)])
    assert a.shape == (120, latent_dim) and torch.equal(a, b)


def test_same_seed_same_events_and_batching_invariance(tiny_models):
    module, model = get_model("convnet"), tiny_models["convnet"]
    a = module.generate(model, torch.Generator().manual_seed(11), n_events=2, images_per_forward=40)
    g = torch.Generator().manual_seed(11)
    b = torch.cat([module.generate(model, g, n_events=1), module.generate(model, g, n_events=1)])
    assert torch.equal(a, b), "events must not depend on how many are generated per call"
    c = module.generate(model, torch.Generator().manual_seed(12), n_events=1)
    assert not torch.equal(a[0], c[0])


def test_chunked_forward_matches_whole_event(tiny_models):
    module, model = get_model("convnet"), tiny_models["convnet"]
    z = torch.randn(40, 96, generator=torch.Generator().manual_seed(3))
    whole = module.generate(model, latents=z)
    chunked = module.generate(model, latents=z, images_per_forward=7)
    diff = (whole.int() - chunked.int()).abs()
    # Different batch sizes may pick different conv kernels: allow rare off-by-one ADU.
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4


def test_convnet_image_i_is_sensor_i(tiny_models):
    module, model = get_model("convnet"), tiny_models["convnet"]
    z = torch.randn(40, 96, generator=torch.Generator().manual_seed(5))
    events = module.generate(model, latents=z)
    with torch.inference_mode():
        for i in (0, 17, 39):
            single = model_to_adc(model(z[i:i + 1])[:, 0])[0]
            diff = (single.int() - events[0, i].int()).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4


def test_ieagan_conditions_image_i_on_sensor_i(tiny_models):
    module, model = get_model("ieagan"), tiny_models["ieagan"]
    z = torch.randn(40, 128, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        labels = torch.arange(40)
        cond = model.condition(z, labels)
        reversed_cond = model.condition(z, labels.flip(0))
        # The class embedding part differs when the labels differ, the latent part not.
        assert not torch.allclose(cond[:, :128], reversed_cond[:, :128])
        assert torch.equal(cond[:, 128:], z)
        # Relational reasoning runs per event: two events = each event alone.
        z2 = torch.randn(80, 128, generator=torch.Generator().manual_seed(6))
        both = model.condition(z2, torch.arange(40).repeat(2))
        assert torch.allclose(both[40:], model.condition(z2[40:], labels), atol=1e-6)
        expected = model_to_adc(model(z, labels)[:, 0], model_cut=-0.26)
    events = module.generate(model, latents=z)
    assert events.shape == (1, N_SENSORS, 250, 768) and events.dtype == torch.uint8
    # basf2's cut at model value -0.26 (6.78 ADU): nothing survives below 6 ADU.
    values = events.unique()
    assert not torch.any((values > 0) & (values < 6))
    diff = (events[0].int() - expected.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4


def test_relational_reasoning_mixes_the_event(tiny_models):
    model = tiny_models["ieagan"]
    z = torch.randn(40, 128, generator=torch.Generator().manual_seed(8))
    labels = torch.arange(40)
    with torch.inference_mode():
        a = model.condition(z, labels)
        # Sensor 0's embedding depends on which other sensors share its event.
        other = labels.clone()
        other[1:] = 5
        b = model.condition(z, other)
    assert not torch.allclose(a[0, :128], b[0, :128])


def test_model_to_adc_matches_basf2_inversion():
    x = torch.linspace(-1.2, 1.2, 256 * 768 * 4).view(4, 256, 768)
    # basf2: crop rows 3..252, x*0.5+0.5 clamped to [0,1], 256**x - 1 clamped, to uint8
    ref = x[:, 3:-3, :].mul(0.5).add(0.5).clamp(0.0, 1.0)
    ref = torch.pow(256.0, ref).sub(1.0).clamp(0.0, 255.0).to(torch.uint8)
    assert torch.equal(model_to_adc(x), ref)
    # IEA-GAN: F.threshold(x, -0.26, -1) before the same inversion
    ref_cut = F.threshold(x, -0.26, -1.0)[:, 3:-3, :].mul(0.5).add(0.5)
    ref_cut = torch.pow(256.0, ref_cut).add(-1).clamp(0, 255).to(torch.uint8)
    assert torch.equal(model_to_adc(x, model_cut=-0.26), ref_cut)
    edge = torch.full((1, 256, 768), -0.26)
    assert model_to_adc(edge, model_cut=-0.26).max() == 0
    assert model_to_adc(edge + 1e-3, model_cut=-0.26).min() == 6


def test_spectral_norm_estimates_largest_singular_value():
    torch.manual_seed(0)
    layer = SNLinear(20, 30)
    layer.train()
    for _ in range(50):  # power iteration converges in training mode
        w = layer.normalized_weight()
    assert math.isclose(torch.linalg.matrix_norm(w.detach(), ord=2).item(), 1.0, rel_tol=1e-3)
    layer.eval()
    u_before = layer.u0.clone()
    layer(torch.randn(2, 20))
    assert torch.equal(layer.u0, u_before), "evaluation must not update the singular vector"


def test_invalid_model_arguments():
    with pytest.raises(ValueError):
        get_model("convnet").Model(width=0)
    with pytest.raises(ValueError):
        get_model("ieagan").Model(ch=1)
    with pytest.raises(ValueError, match="latents must have shape"):
        get_model("convnet").generate(get_model("convnet").Model(width=1 / 32), latents=torch.zeros(39, 96))


def test_spectral_norm_conv_works_in_channels_last():
    torch.manual_seed(0)
    conv = SNConv2d(4, 6, 3).eval()
    x = torch.randn(2, 4, 8, 8)
    expected = conv(x)
    conv = conv.to(memory_format=torch.channels_last)
    got = conv(x.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)
