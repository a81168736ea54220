"""Other work on the machine while edgec times (``edgec.profiling.host_load``): counted apart from edgec's
own CPU time, and warned about in the profile's summary and report."""

import subprocess
import time

from edgec.profiling import host_load
from edgec.profiling.host_load import HostLoad
from edgec.profiling.report import busy_text


def test_a_busy_neighbour_is_counted_and_edgecs_own_work_is_not(monkeypatch):
    busy = iter([100.0, 104.0])  # all processes: 4 CPU-seconds over the window
    own = iter([10.0, 11.0])  # ours: 1 of them
    clock = iter([0.0, 2.0])
    monkeypatch.setattr(host_load, "_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(host_load, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(host_load.time, "monotonic", lambda: next(clock))
    with HostLoad(cores=2) as load:
        pass
    assert load.others_cores == 1.5 and load.busy
    assert load.to_dict() == {"others_cores": 1.5, "cores": 2, "seconds": 2.0, "busy": True}


def test_a_real_busy_loop_shows_up():
    loop = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        time.sleep(0.3)
        with HostLoad() as load:
            time.sleep(1.5)
    finally:
        loop.kill()
        loop.wait()
    assert load.others_cores is not None and load.others_cores >= 0.5, load


def test_the_warning_names_the_cores_and_a_quiet_profile_has_none():
    assert busy_text({"host_load": {"others_cores": 0.1, "cores": 2, "busy": False}}) is None
    assert busy_text({}) is None
    text = busy_text({"host_load": {"others_cores": 1.62, "cores": 2, "busy": True}})
    assert text.startswith("other work kept 1.6 of this machine's 2 cores busy while it timed")
