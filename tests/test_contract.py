"""The public contract of design.md: names exist, are exported, are documented and typed."""

from __future__ import annotations

import enum
import importlib
import inspect
import pathlib
import pickle
import pkgutil
import subprocess

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


#: Each library error, the builtin a caller would catch it as, and the module that raises it
#: (where it stays importable).
ERRORS = [
    ("InvalidConfigError", ValueError, "pysockopt.errors"),
    ("UnsupportedPlatformError", OSError, "pysockopt.errors"),
    ("NetnsGoneError", FileNotFoundError, "pysockopt.host.namespaces"),
    ("NetnsPermissionError", PermissionError, "pysockopt.host.namespaces"),
    ("NotANetnsError", ValueError, "pysockopt.host.namespaces"),
    ("UnknownErrnoName", LookupError, "pysockopt.errno"),
    ("UnsupportedClientError", RuntimeError, "pysockopt.integrations"),
]


@pytest.mark.parametrize(("name", "builtin", "module"), ERRORS)
def test_every_error_has_its_builtin_parent_and_the_root(name: str, builtin: type,
                                                         module: str) -> None:
    cls = getattr(pysockopt, name)
    assert issubclass(cls, builtin) and issubclass(cls, pysockopt.Error)
    assert cls.__module__ == "pysockopt.errors" and name in pysockopt.__all__
    assert getattr(importlib.import_module(module), name) is cls  # the old import path


def test_every_exception_class_of_the_package_is_listed() -> None:
    # Walks the package's modules: a new public error is in ERRORS (and so has both parents).
    found = set()
    for info in pkgutil.walk_packages(pysockopt.__path__, "pysockopt."):
        if info.name.endswith(("prometheus", "__main__")):
            continue  # prometheus_client is an extra; __main__ runs the CLI
        for attr, value in vars(importlib.import_module(info.name)).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__.startswith("pysockopt") and not attr.startswith("_")
                    and not value.__module__.startswith(("pysockopt.cli", "pysockopt._"))):
                found.add(value.__name__)
    assert found - {"Error"} == {name for name, _, _ in ERRORS}


def test_errors_pickle_with_their_fields() -> None:
    err = pysockopt.NetnsPermissionError(1, "no", "ptrace")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, pysockopt.NetnsPermissionError) and isinstance(back, pysockopt.Error)
    assert back.check == "ptrace" and back.errno == 1


def test_old_import_paths_keep_working_and_keep_the_functions() -> None:
    import sys

    # In a fresh interpreter: the order of imports is what matters.
    code = (
        "import pysockopt\n"
        "from pysockopt.diagnose import RULES, Thresholds, host_facts\n"
        "from pysockopt.connections import processes_of, parse_state\n"
        "import pysockopt.aio\n"
        "assert callable(pysockopt.diagnose) and callable(pysockopt.connections)\n"
        "assert pysockopt.diagnose.__module__ == 'pysockopt.host.diagnosis'\n"
        "assert RULES and Thresholds() == pysockopt.Thresholds()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
