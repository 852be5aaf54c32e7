"""Write basf2_state_dict_keys.json: the state-dict keys and shapes of basf2's generator
models, derived by hand from the layer definitions in basf2's
``pxd/scripts/pxd/background_generator/models/{convnet,resnet,ieagan}.py``.

Deliberately independent of pxdbg's model code: it spells out basf2's layer list (names,
channel counts, kernel sizes, buffers), so the test that loads a state dict with exactly
these keys and shapes into pxdbg's models checks pxdbg against basf2, not against itself.
Run: ``python tests/data/derive_basf2_state_dict_keys.py``.
"""

import json
from pathlib import Path


def conv(prefix, c_in, c_out, k, bias=True):
    keys = {f"{prefix}.weight": [c_out, c_in, k, k]}
    if bias:
        keys[f"{prefix}.bias"] = [c_out]
    return keys


def batchnorm2d(prefix, c):  # torch.nn.BatchNorm2d
    return {f"{prefix}.weight": [c], f"{prefix}.bias": [c], f"{prefix}.running_mean": [c],
            f"{prefix}.running_var": [c], f"{prefix}.num_batches_tracked": []}


def convnet():
    keys = {"fc.weight": [512 * 8 * 24, 96], "fc.bias": [512 * 8 * 24]}
    channels = [512, 512, 256, 128, 64, 32]
    # nn.Sequential: (conv, bn, relu, upsample) x 5, then the output conv at index 20
    for stage, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        keys |= conv(f"features.{4 * stage}", c_in, c_out, 5)
        keys |= batchnorm2d(f"features.{4 * stage + 1}", c_out)
    keys |= conv("features.20", 32, 1, 5)
    return keys


def resnet():
    keys = {"fc.weight": [256 * 8 * 24, 96], "fc.bias": [256 * 8 * 24]}
    channels = [256, 256, 128, 64, 32, 16]
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        p = f"blocks.{i}"
        keys |= conv(f"{p}.conv", c_in, c_out, 1)  # shortcut: every block upsamples
        keys |= batchnorm2d(f"{p}.norm1", c_in)
        keys |= conv(f"{p}.conv1", c_in, c_out, 3)
        keys |= batchnorm2d(f"{p}.norm2", c_out)
        keys |= conv(f"{p}.conv2", c_out, c_out, 3)
    keys |= batchnorm2d("norm", 16)
    keys |= conv("conv", 16, 1, 3)
    return keys


def sn(prefix, n_out):  # BigGAN SN mixin buffers, num_svs = 1
    return {f"{prefix}.u0": [1, n_out], f"{prefix}.sv0": [1]}


def sn_conv(prefix, c_in, c_out, k):
    return conv(prefix, c_in, c_out, k) | sn(prefix, c_out)


def sn_linear(prefix, n_in, n_out, bias=True):
    keys = {f"{prefix}.weight": [n_out, n_in]}
    if bias:
        keys[f"{prefix}.bias"] = [n_out]
    return keys | sn(prefix, n_out)


def ccbn(prefix, c, cond=256):
    return (sn_linear(f"{prefix}.gain", cond, c, bias=False) | sn_linear(f"{prefix}.bias", cond, c, bias=False)
            | {f"{prefix}.stored_mean": [c], f"{prefix}.stored_var": [c]})


def linear(prefix, n_in, n_out):
    return {f"{prefix}.weight": [n_out, n_in], f"{prefix}.bias": [n_out]}


def layernorm(prefix, n):
    return {f"{prefix}.weight": [n], f"{prefix}.bias": [n]}


def ieagan():
    # CONFIG: G_ch 32, G_depth 2, dim_z 128, shared_dim 128, bottom_width 4, H_base 3,
    # resolution 256, G_attn "0" (no attention), G_shared, hier, RRM_prx_G, n_head_G 2, SN.
    ch, depth = 32, 2
    in_ch = [ch * m for m in (16, 16, 8, 8, 4, 2)]
    out_ch = [ch * m for m in (16, 8, 8, 4, 2, 1)]
    keys = {"shared.weight": [40, 128]}
    rr = "RR_G.layers.0"
    keys |= linear(f"{rr}.self_attn.qkv_proj", 128, 384) | linear(f"{rr}.self_attn.o_proj", 128, 128)
    keys |= linear(f"{rr}.linear_net.0", 128, 128) | linear(f"{rr}.linear_net.3", 128, 128)
    keys |= layernorm(f"{rr}.norm1", 128) | layernorm(f"{rr}.norm2", 128) | layernorm("RR_G.norm", 128)
    keys |= sn_linear("linear", 256, in_ch[0] * 4 * 4 * 3)
    index = 0
    for stage in range(6):
        for g in range(depth):
            c_in = in_ch[stage]
            c_out = in_ch[stage] if g == 0 else out_ch[stage]
            hidden = c_in // 4
            p = f"blocks.{index}.0"
            keys |= sn_conv(f"{p}.conv1", c_in, hidden, 1) | sn_conv(f"{p}.conv2", hidden, hidden, 3)
            keys |= sn_conv(f"{p}.conv3", hidden, hidden, 3) | sn_conv(f"{p}.conv4", hidden, c_out, 1)
            keys |= ccbn(f"{p}.bn1", c_in) | ccbn(f"{p}.bn2", hidden) | ccbn(f"{p}.bn3", hidden)
            keys |= ccbn(f"{p}.bn4", hidden)
            index += 1
    keys |= {"output_layer.0.gain": [32], "output_layer.0.bias": [32],
             "output_layer.0.stored_mean": [32], "output_layer.0.stored_var": [32]}
    keys |= sn_conv("output_layer.2", 32, 1, 3)
    return keys


if __name__ == "__main__":
    data = {
        "source": "belle2/basf2 pxd/scripts/pxd/background_generator/models/ (convnet.py, resnet.py, ieagan.py)",
        "models": {"convnet": convnet(), "resnet": resnet(), "ieagan": ieagan()},
    }
    out = Path(__file__).with_name("basf2_state_dict_keys.json")
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(out, {k: len(v) for k, v in data["models"].items()})
