"""tegrastats lines from Nano, Xavier NX and Orin boards parse into the flat metrics the metrics topic carries."""

import sys
from pathlib import Path

import pytest

from edge_gmm.devices.tegrastats import TegrastatsReader, parse_line

FIXTURES = Path(__file__).parent / "fixtures" / "tegrastats"


def _lines(name):
    return [l for l in (FIXTURES / name).read_text().splitlines() if l.strip()]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.txt")))
def test_every_captured_line_gives_the_core_metrics(name):
    for line in _lines(name):
        m = parse_line(line)
        assert 0 < m["ram_used_mb"] < m["ram_total_mb"]
        assert 0 <= m["cpu_load_pct"] <= 100 and m["cpu_online"] >= 1
        assert 0 <= m["gpu_load_pct"] <= 100
        assert any(k.startswith("temp_") for k in m)
        assert any(k.startswith("power_") and k.endswith("_mw") for k in m)


def test_nano_format_offline_cores_gpu_clock_and_pom_rails():
    busy = parse_line(_lines("jetson-nano-jp46.txt")[1])
    assert busy["cpu_cores"] == 4 and busy["cpu_online"] == 2
    assert busy["cpu_load_pct"] == pytest.approx((54 + 47) / 2)
    assert "cpu1_load_pct" not in busy and busy["cpu3_mhz"] == 1479
    assert busy["gpu_load_pct"] == 87 and busy["gpu_mhz"] == 921
    assert busy["power_pom_5v_in_mw"] == 5913 and busy["power_pom_5v_in_avg_mw"] == 4033
    assert busy["temp_gpu_c"] == 34.5 and busy["swap_used_mb"] == 12


def test_xavier_format_without_clocks_and_unitless_rails():
    m = parse_line(_lines("jetson-xavier-nx-jp51.txt")[1])
    assert m["gpu_load_pct"] == 64 and "gpu_mhz" not in m
    assert m["emc_load_pct"] == 18
    assert m["power_vdd_in_mw"] == 8210 and m["power_vdd_cpu_gpu_cv_avg_mw"] == 1816


def test_orin_formats_bracketed_gpc_clocks_mw_units_and_switched_off_zones():
    agx_idle, agx_busy = (parse_line(l) for l in _lines("jetson-agx-orin-jp512.txt"))
    assert "temp_gpu_c" not in agx_idle and "temp_cv0_c" not in agx_idle  # -256C = zone powered off
    assert agx_idle["temp_tj_c"] == pytest.approx(43.781)
    assert agx_busy["gpu_load_pct"] == 58 and agx_busy["gpu_mhz"] == 1300
    assert agx_busy["power_vddq_vdd2_1v8ao_mw"] == 812 and agx_busy["power_vin_sys_5v0_mw"] == 4805
    nano = parse_line(_lines("jetson-orin-nano-jp62.txt")[1])  # JetPack 6 prefixes a timestamp
    assert nano["gpu_mhz"] == 1020 and nano["power_vdd_in_mw"] == 9120 and nano["cpu_online"] == 6
    nx = parse_line(_lines("jetson-orin-nx-jp60.txt")[0])  # "NVDLA0 off" etc. are skipped, not misread
    assert nx["cpu_online"] == 8 and nx["gpu_load_pct"] == 14 and nx["temp_soc1_c"] == 42.8


def test_unknown_or_garbage_lines_give_no_keys_instead_of_failing():
    assert parse_line("") == {}
    assert parse_line("tegrastats: permission denied") == {}


def test_reader_keeps_the_latest_reading_from_a_running_process(tmp_path):
    # tegrastats itself only exists on a Jetson: a child process printing the captured lines stands in for it
    script = tmp_path / "fake_tegrastats.py"
    script.write_text(
        "import sys, time\n"
        f"lines = open({str(FIXTURES / 'jetson-orin-nano-jp62.txt')!r}).read().splitlines()\n"
        "for l in lines:\n    print(l, flush=True)\n"
        "time.sleep(30)\n"
    )
    import time

    with TegrastatsReader(command=[sys.executable, str(script)]) as reader:
        deadline = time.monotonic() + 10
        while reader.lines < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.latest()["gpu_load_pct"] == 71
    assert TegrastatsReader(command=["no-such-tegrastats-binary"]).start().latest() == {}
