"""MCU clock -> host clock: wrap-around, drift and offset from delayed sync points, re-anchoring on a reset."""

import numpy as np

from edge_gmm.firmware_bridge.clock import McuClock


def test_unwrap_across_the_u32_wrap_and_small_steps_back():
    c = McuClock()
    seq = [2**32 - 3000, 2**32 - 1000, 500, 200, 4000]  # 200 < 500: an earlier sensor's frame after a later one
    assert [c.unwrap(t) for t in seq] == [2**32 - 3000, 2**32 - 1000, 2**32 + 500, 2**32 + 200, 2**32 + 4000]


def test_time_sync_epoch_pins_the_high_word():
    c = McuClock()
    assert c.unwrap(100, epoch=3) == (3 << 32) + 100
    assert c.unwrap(300) == (3 << 32) + 300


def test_drift_and_offset_from_jittered_sync_points():
    rng = np.random.default_rng(0)
    c = McuClock()
    ppm, offset = 80e-6, 1234.5
    for k in range(60):  # a sync point every 0.5 s for 30 s; arrival = true + 0..3 ms of delay
        mcu_us = 5_000_000 + k * 500_000
        c.observe(mcu_us, offset + (1 + ppm) * mcu_us * 1e-6 + rng.uniform(0, 0.003))
    assert abs(c.drift_ppm - 80) < 40
    probe = 5_000_000 + 30_000_000
    assert abs(c.to_host(probe) - (offset + (1 + ppm) * probe * 1e-6)) < 0.002


def test_reanchors_when_the_mcu_clock_jumps():
    c = McuClock()
    c.observe(10_000_000, 100.0)
    c.observe(10_500_000, 100.5)
    c.observe(1_000, 101.0)  # MCU rebooted: its clock restarted
    assert c.reanchors == 1
    assert abs(c.to_host(1_000) - 101.0) < 1e-9


def test_a_late_sync_point_moves_nothing_and_an_early_one_reanchors():
    c = McuClock()
    for k in range(20):
        c.observe(k * 500_000, 50.0 + k * 0.5 + 0.001)
    before = c.to_host(10_000_000)
    c.observe(10_000_000, 60.001 + 0.8)  # the host stalled for 0.8 s before reading this one
    assert abs(c.to_host(10_000_000) - before) < 1e-6 and c.reanchors == 0
    c.observe(10_500_000, 60.501 - 0.5)  # impossible unless the earlier points were stale: start over
    assert c.reanchors == 1 and abs(c.to_host(10_500_000) - 60.001) < 1e-9
