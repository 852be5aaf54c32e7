"""The 40 PXD sensors in basf2 order, and the image geometry the generators use.

Index 0..39: layer 1 ladders 1..8 with sensors 1, 2, then layer 2 ladders 1..12 with
sensors 1, 2; ``index = 2*(ladder-1) + (sensor-1)`` plus 16 on layer 2.
"""

from __future__ import annotations

import numpy as np

N_SENSORS = 40
N_UCELLS = 250  # image rows
N_VCELLS = 768  # image columns
EVENT_SHAPE = (N_SENSORS, N_UCELLS, N_VCELLS)

#: GAN models work on 256-row images: 3 padding rows above and below the 250 u cells.
PADDED_UCELLS = 256
ROW_PADDING = 3

LADDERS_PER_LAYER = {1: 8, 2: 12}
SENSORS_PER_LADDER = 2
ZERO_SUPPRESSION_ADU = 7


def sensor_index(layer: int, ladder: int, sensor: int) -> int:
    """Index 0..39 of a (layer, ladder, sensor) triple; ValueError for one that does not exist."""
    if layer not in LADDERS_PER_LAYER:
        raise ValueError(f"PXD layer must be 1 or 2, got {layer!r}")
    if not 1 <= ladder <= LADDERS_PER_LAYER[layer]:
        raise ValueError(f"layer {layer} has ladders 1..{LADDERS_PER_LAYER[layer]}, got {ladder!r}")
    if sensor not in (1, 2):
        raise ValueError(f"PXD sensor number must be 1 or 2, got {sensor!r}")
    return (0 if layer == 1 else 16) + 2 * (ladder - 1) + (sensor - 1)


def _build_table() -> np.ndarray:
    rows = [
        (layer, ladder, sensor)
        for layer in (1, 2)
        for ladder in range(1, LADDERS_PER_LAYER[layer] + 1)
        for sensor in (1, 2)
    ]
    table = np.array(rows, dtype=np.uint8)
    table.setflags(write=False)
    return table


#: ``SENSOR_IDS[i] = (layer, ladder, sensor)`` of sensor index i.
SENSOR_IDS = _build_table()
SENSOR_LAYER = SENSOR_IDS[:, 0]
SENSOR_LADDER = SENSOR_IDS[:, 1]
SENSOR_NUMBER = SENSOR_IDS[:, 2]


def sensor_id(index: int) -> tuple[int, int, int]:
    if not 0 <= index < N_SENSORS:
        raise ValueError(f"sensor index must be 0..{N_SENSORS - 1}, got {index!r}")
    layer, ladder, sensor = SENSOR_IDS[index]
    return int(layer), int(ladder), int(sensor)


def sensor_name(index: int) -> str:
    """basf2's VxdID string form, e.g. ``"1.1.1"``."""
    return "{}.{}.{}".format(*sensor_id(index))
