"""The public contract of design.md: names exist, are exported, are documented and typed."""

from __future__ import annotations

import enum
import inspect
import pathlib

import pytest

import pysockopt

CONTRACT = {
    # keepalive
    "KeepaliveConfig", "KeepaliveReport", "InvalidConfigError", "apply_keepalive",
    "read_keepalive", "system_keepalive",
    # TCP_INFO
    "TcpState", "TcpInfo", "tcp_info", "poll_tcp_info",
    # errno
    "errno_info", "ErrnoInfo", "ErrorCategory",
    # host-wide sockets
    "connections", "Connection", "state_counts", "diagnose", "Diagnosis", "Finding",
    # network namespaces and containers
    "namespaces", "NetNamespace", "Container",
    # samples and rates
    "sample", "Sample", "Rates", "Counters",
    # live remediation
    "process_sockets", "apply_keepalive_to_process", "destroy",
    # heartbeats
    "HeartbeatMonitor",
    # closed connections
    "closed_connections", "ClosedConnection",
}


def test_contract_names_are_exported() -> None:
    missing = CONTRACT - set(pysockopt.__all__)
    assert not missing, f"design.md names missing from pysockopt.__all__: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(pysockopt.__all__))
def test_every_public_name_exists_and_has_a_docstring(name: str) -> None:
    obj = getattr(pysockopt, name)
    if isinstance(obj, (tuple, dict, int, str)):  # data constants are described in their module
        return
    assert inspect.getdoc(obj), f"pysockopt.{name} has no docstring"
    if inspect.isclass(obj) and not issubclass(obj, (enum.Enum, BaseException)):
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(
                    value, (property, classmethod, staticmethod))):
                continue
            assert inspect.getdoc(value), f"pysockopt.{name}.{attr} has no docstring"


def test_all_has_no_duplicates_and_package_is_typed() -> None:
    assert len(pysockopt.__all__) == len(set(pysockopt.__all__))
    package = pathlib.Path(pysockopt.__file__).parent
    assert (package / "py.typed").exists() and (package / "_native.pyi").exists()


def test_tcp_state_numbers_are_the_kernels() -> None:
    expected = {"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT1": 4, "FIN_WAIT2": 5,
                "TIME_WAIT": 6, "CLOSE": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9, "LISTEN": 10,
                "CLOSING": 11, "NEW_SYN_RECV": 12}
    for name, number in expected.items():
        assert pysockopt.TcpState[name] == number
    assert pysockopt.TcpState.SYN_RECV.label == "SYN_RECV"
    assert pysockopt.TcpState.CLOSE_WAIT.label == "CLOSE_WAIT"


def test_invalid_config_error_is_a_value_error() -> None:
    assert issubclass(pysockopt.InvalidConfigError, ValueError)
