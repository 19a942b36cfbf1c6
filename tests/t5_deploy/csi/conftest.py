"""Fixtures of the CSI driver tests; a teardown that unmounts everything under
the test's temp dir even when the test failed."""

import pytest

from csi_harness import Driver
from tests.harness.mounts import unmount_all


@pytest.fixture
def base(tmp_path):
    yield tmp_path
    unmount_all(str(tmp_path))


@pytest.fixture
def make_driver(base):
    drivers = []

    def make(**kwargs) -> Driver:
        driver = Driver(base, **kwargs)
        driver.start()
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.stop()


@pytest.fixture(scope="module")
def shared_driver(tmp_path_factory):
    """One driver for a module's many input checks that never mount."""
    base = tmp_path_factory.mktemp("driver")
    driver = Driver(base)
    driver.start()
    yield driver
    driver.stop()
    unmount_all(str(base))
