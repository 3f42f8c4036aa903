from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import platform
import re
import resource
import runpy
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st
from netns import NetnsPair

import pysockopt
from pysockopt import (
    Action,
    ErrnoInfo,
    ErrorCategory,
    Triage,
    UnknownErrnoName,
    _platform,
    errno_info,
    errno_search,
    errno_table,
    read_keepalive,
    triage,
)
from pysockopt._core import ffi, lib

ROOT = Path(__file__).resolve().parent.parent
LINUX = _platform.LINUX
linux_only = pytest.mark.skipif(not LINUX, reason="asserts Linux kernel behaviour")

#: The errnos of domain.md section 6: socket code meets all of them.
SOCKET_ERRNOS = (
    "EPERM", "EINTR", "EBADF", "EAGAIN", "EWOULDBLOCK", "ENOMEM", "EACCES", "EFAULT", "EINVAL",
    "ENFILE", "EMFILE", "ENOSPC", "EPIPE", "ENOTSOCK", "EDESTADDRREQ", "EMSGSIZE",
    "EPROTOTYPE", "ENOPROTOOPT", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT", "EOPNOTSUPP",
    "EPFNOSUPPORT", "EAFNOSUPPORT", "EADDRINUSE", "EADDRNOTAVAIL", "ENETDOWN", "ENETUNREACH",
    "ENETRESET", "ECONNABORTED", "ECONNRESET", "ENOBUFS", "EISCONN", "ENOTCONN", "ESHUTDOWN",
    "ETIMEDOUT", "ECONNREFUSED", "EHOSTDOWN", "EHOSTUNREACH", "EALREADY", "EINPROGRESS",
)

C = ErrorCategory


# --- the table: names, numbers and messages from the platform


@pytest.mark.parametrize("code", sorted(errno.errorcode))
def test_every_python_errno_resolves_to_its_name_and_message(code: int) -> None:
    info = errno_info(code)
    assert info.known and info.code == code
    assert info.name == errno.errorcode[code]
    assert getattr(errno, info.name) == code
    assert info.message == os.strerror(code)
    for alias in info.aliases:
        assert getattr(errno, alias, code) == code
    assert info.meaning and info.advice


def test_every_errno_name_python_knows_resolves_to_its_number() -> None:
    names = [n for n in dir(errno) if re.fullmatch(r"E[A-Z0-9]+", n)]
    assert len(names) > 50
    for name in names:
        info = errno_info(name)
        assert info.code == getattr(errno, name), name
        assert name in info.names


def _header_macros() -> dict[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to read <errno.h> with")
    done = subprocess.run([cc, "-E", "-dM", "-x", "c", "-"], input="#include <errno.h>\n",
                          capture_output=True, text=True, check=True)
    return dict(re.findall(r"^#define (E[A-Z0-9]+) (\S+)$", done.stdout, re.MULTILINE))


def test_native_table_is_exactly_what_errno_h_defines() -> None:
    macros = _header_macros()
    numeric = {n: int(v) for n, v in macros.items() if v.isdigit()}
    aliases = {n: v for n, v in macros.items() if v in numeric}
    table = {ffi.string(lib.pso_errno_table[i].name).decode():
             (lib.pso_errno_table[i].code, lib.pso_errno_table[i].alias)
             for i in range(lib.pso_errno_count)}
    assert set(table) == set(numeric) | set(aliases)
    for name, code in numeric.items():
        assert table[name] == (code, 0), name
    for name, target in aliases.items():
        assert table[name] == (numeric[target], 1), name
    assert lib.pso_errno_table[lib.pso_errno_count].name == ffi.NULL


@pytest.mark.parametrize(("a", "b"), [("EWOULDBLOCK", "EAGAIN"), ("EDEADLOCK", "EDEADLK"),
                                      ("ENOTSUP", "EOPNOTSUPP")])
def test_aliases_share_one_info_with_pythons_primary_name(a: str, b: str) -> None:
    if getattr(errno, a) != getattr(errno, b):
        pytest.skip(f"{a} and {b} are different numbers on this platform")
    info = errno_info(a)
    assert info is errno_info(b) is errno_info(info.code)
    assert info.name == errno.errorcode[info.code]
    assert set(info.names) == {a, b}
    assert info.name not in info.aliases


def test_generator_reads_other_platforms_headers() -> None:
    gen = runpy.run_path(str(ROOT / "csrc" / "gen_errno_table.py"))
    macos_like = textwrap.dedent("""\
        #define EAGAIN 35
        #define ECONNRESET 54
        #define EWOULDBLOCK EAGAIN
        #define EINDIRECT (EWOULDBLOCK)
        #define ELAST 106
        #define EBITS (1 << 3)
        #define EDANGLING ENOSUCHTHING
        #define errno (*__error())
        #define _ERRNO_H_ 1
    """)
    names = gen["parse_macros"](macos_like)
    assert names == {"EAGAIN": None, "ECONNRESET": None, "EWOULDBLOCK": "EAGAIN",
                     "EINDIRECT": "EAGAIN"}
    source = gen["table_source"](names)
    assert '{"ECONNRESET", ECONNRESET, 0}' in source
    assert '{"EWOULDBLOCK", EWOULDBLOCK, 1}' in source
    assert not re.search(r"\b(35|54)\b", source)  # numbers come from the compiler


def test_generated_table_compiles_cleanly_on_its_own(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    gen = runpy.run_path(str(ROOT / "csrc" / "gen_errno_table.py"))
    src = tmp_path / "t.c"
    src.write_text('#include "errnotab.h"\n' + gen["table_source"]() + textwrap.dedent("""
        #include <stdio.h>
        int main(void) {
            for (int i = 0; i < pso_errno_count; i++)
                printf("%s %d\\n", pso_errno_table[i].name, pso_errno_table[i].code);
            return 0;
        }
    """))
    exe = tmp_path / "t"
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'csrc'}",
                    str(src), "-o", str(exe)], check=True, capture_output=True)
    printed = dict(line.split() for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    assert {n: int(c) for n, c in printed.items()} == {
        n: i.code for i in errno_table() for n in i.names}


def test_primary_name_without_python_prefers_a_numeric_macro() -> None:
    from pysockopt.errno import _build

    by_code, by_name = _build([("EZZALIAS", 9901, True), ("EZZREAL", 9901, False)])
    info = by_code[9901]
    assert info.name == "EZZREAL" and info.aliases == ("EZZALIAS",)
    assert by_name["EZZALIAS"] is info
    assert info.category is C.OTHER and info.meaning and info.advice


def test_table_is_ordered_unique_and_complete() -> None:
    table = errno_table()
    codes = [i.code for i in table]
    assert codes == sorted(set(codes))
    assert set(errno.errorcode) <= set(codes)
    assert all(i.known for i in table)


# --- explanations


@pytest.mark.parametrize("name", SOCKET_ERRNOS)
def test_every_socket_errno_has_its_own_meaning_and_advice(name: str) -> None:
    info = errno_info(name)
    assert info.category is not C.OTHER
    assert len(info.meaning) > 60 and len(info.advice) > 30
    generic = errno_info("ECHILD")
    assert info.advice != generic.advice


@pytest.mark.parametrize(("name", "category", "retryable", "action"), [
    ("EAGAIN", C.WOULD_BLOCK, True, Action.RETRY),
    ("EWOULDBLOCK", C.WOULD_BLOCK, True, Action.RETRY),
    ("EINTR", C.INTERRUPTED, True, Action.RETRY),
    ("EINPROGRESS", C.IN_PROGRESS, True, Action.RETRY),
    ("EALREADY", C.IN_PROGRESS, True, Action.RETRY),
    ("ENOBUFS", C.RESOURCE, True, Action.RETRY),
    ("EMFILE", C.RESOURCE, True, Action.RETRY),
    ("ENFILE", C.RESOURCE, True, Action.RETRY),
    ("ENOSPC", C.RESOURCE, False, Action.GIVE_UP),
    ("ETIMEDOUT", C.TIMEOUT, False, Action.RECONNECT),
    ("ECONNRESET", C.PEER_RESET, False, Action.RECONNECT),
    ("ECONNABORTED", C.PEER_RESET, False, Action.RECONNECT),
    ("ENETRESET", C.PEER_RESET, False, Action.RECONNECT),
    ("EPIPE", C.PEER_CLOSED, False, Action.RECONNECT),
    ("ENOTCONN", C.PEER_CLOSED, False, Action.RECONNECT),
    ("ECONNREFUSED", C.REFUSED, False, Action.RECONNECT),
    ("ENETUNREACH", C.UNREACHABLE, False, Action.RECONNECT),
    ("EHOSTUNREACH", C.UNREACHABLE, False, Action.RECONNECT),
    ("ENETDOWN", C.UNREACHABLE, False, Action.RECONNECT),
    ("EADDRINUSE", C.ADDRESS, False, Action.GIVE_UP),
    ("EADDRNOTAVAIL", C.ADDRESS, False, Action.RECONNECT),
    ("EBADF", C.INVALID, False, Action.GIVE_UP),
    ("ENOTSOCK", C.INVALID, False, Action.GIVE_UP),
    ("EINVAL", C.INVALID, False, Action.GIVE_UP),
    ("ENOPROTOOPT", C.INVALID, False, Action.GIVE_UP),
    ("EOPNOTSUPP", C.INVALID, False, Action.GIVE_UP),
    ("EISCONN", C.INVALID, False, Action.GIVE_UP),
    ("EPERM", C.PERMISSION, False, Action.GIVE_UP),
    ("EACCES", C.PERMISSION, False, Action.GIVE_UP),
])
def test_classic_categories(name: str, category: ErrorCategory, retryable: bool,
                            action: Action) -> None:
    info = errno_info(name)
    assert (info.category, info.retryable, info.action) == (category, retryable, action)


def test_retryable_only_where_the_same_call_can_succeed() -> None:
    retryable = {n for i in errno_table() if i.retryable for n in i.names}
    assert retryable == {"EAGAIN", "EWOULDBLOCK", "EINTR", "EINPROGRESS", "EALREADY", "ENOBUFS",
                         "ENOMEM", "EMFILE", "ENFILE", "ETOOMANYREFS"} & set(dir(errno))
    assert all(i.action is Action.RETRY for i in errno_table() if i.retryable)


@pytest.mark.parametrize(("name", "phrase"), [
    ("EPIPE", "SIGPIPE"),
    ("EAGAIN", "not an error"),
    ("ECONNRESET", "crashed"),
    ("ECONNRESET", "SO_LINGER"),
    ("ETIMEDOUT", "connect()"),
    ("ETIMEDOUT", "keepalive"),
    ("ETIMEDOUT", "TCP_USER_TIMEOUT"),
    ("EADDRNOTAVAIL", "ephemeral port"),
    ("EADDRNOTAVAIL", "TIME_WAIT"),
    ("EINPROGRESS", "SO_ERROR"),
    ("ECONNABORTED", "accept()"),
    ("EADDRINUSE", "SO_REUSEADDR"),
    ("EMFILE", "RLIMIT_NOFILE"),
])
def test_explanations_cover_the_socket_specific_causes(name: str, phrase: str) -> None:
    info = errno_info(name)
    assert phrase in info.meaning + info.advice


def test_other_errnos_get_category_other_and_a_meaning_from_their_message() -> None:
    socket_names = {n for i in errno_table() if i.category is not C.OTHER for n in i.names}
    others = [i for i in errno_table() if i.category is C.OTHER]
    assert len(others) > 40 and not socket_names & {n for i in others for n in i.names}
    for info in others:
        assert info.message in info.meaning and info.name in info.meaning
        assert info.advice and not info.retryable and info.action is Action.GIVE_UP


# --- lookups


@pytest.mark.parametrize("query", ["ECONNRESET", "econnreset", " EConnReset\n"])
def test_lookup_by_name_any_case(query: str) -> None:
    assert errno_info(query) is errno_info(errno.ECONNRESET)


def test_lookup_by_exception() -> None:
    assert errno_info(ConnectionResetError(errno.ECONNRESET, "x")).name == "ECONNRESET"
    assert errno_info(OSError(errno.EHOSTUNREACH, "x")).name == "EHOSTUNREACH"


@pytest.mark.parametrize("bad", [OSError("no errno"), socket.gaierror(socket.EAI_NONAME, "x"),
                                 ssl.SSLError(1, "x"), socket.herror(1, "x")])
def test_exceptions_whose_errno_is_not_an_errno_are_value_errors(bad: OSError) -> None:
    with pytest.raises(ValueError):
        errno_info(bad)


@pytest.mark.parametrize("bad", [True, 1.0, None, b"EPIPE", [32]])
def test_other_types_are_type_errors(bad: object) -> None:
    with pytest.raises(TypeError):
        errno_info(bad)  # type: ignore[arg-type]  # the wrong type on purpose


@pytest.mark.parametrize(("query", "suggested"), [("ECONNRESTE", "ECONNRESET"),
                                                   ("connreset", "ECONNRESET"),
                                                   ("EWOULDBLOK", "EWOULDBLOCK"),
                                                   ("ADDRINUSE", "EADDRINUSE")])
def test_unknown_name_suggests_the_closest(query: str, suggested: str) -> None:
    with pytest.raises(UnknownErrnoName) as info:
        errno_info(query)
    assert isinstance(info.value, LookupError)
    assert suggested in info.value.suggestions and suggested in str(info.value)
    assert info.value.name == query


def test_unknown_name_without_anything_close() -> None:
    with pytest.raises(LookupError) as info:
        errno_info("xyzzy-plugh")
    assert "no errno named" in str(info.value)


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_any_number_gives_an_info_never_an_exception(code: int) -> None:
    info = errno_info(code)
    assert info.code == code
    assert info.known == (code in {i.code for i in errno_table()})
    assert info.meaning and info.advice and info.message
    if not info.known:
        assert info.category is C.OTHER and info.name == "" and info.aliases == ()
        assert "not defined on this platform" in info.meaning


def test_negated_errno_is_recognised() -> None:
    info = errno_info(-errno.ECONNRESET)
    assert not info.known and "ECONNRESET" in info.meaning and "negated" in info.meaning


@given(st.text(max_size=20))
def test_any_name_resolves_or_raises_lookup_error(text: str) -> None:
    try:
        info = errno_info(text)
    except UnknownErrnoName as err:
        assert text.strip().upper() not in {n for i in errno_table() for n in i.names}
        assert all(s in {n for i in errno_table() for n in i.names} for s in err.suggestions)
    else:
        assert text.strip().upper() in info.names


def test_info_is_frozen_slotted_and_serialisable() -> None:
    info = errno_info("EPIPE")
    with pytest.raises(AttributeError):
        info.code = 1  # type: ignore[misc]  # frozen: the assignment must fail
    assert not hasattr(info, "__dict__")
    data = json.loads(json.dumps(info.as_dict()))
    assert data["name"] == "EPIPE" and data["category"] == "peer-closed"
    assert data["action"] == "reconnect" and data["known"] is True
    assert hash(info) == hash(errno_info(errno.EPIPE))


def test_search_names_messages_and_meanings() -> None:
    names = {i.name for i in errno_search("reset")}
    assert {"ECONNRESET", "ENETRESET", "ECONNABORTED"} <= names
    assert "EPIPE" in names  # its meaning mentions a reset
    assert errno_search("RESET") == errno_search("reset")
    assert [i.name for i in errno_search("connection reset by peer")] == ["ECONNRESET"]
    assert errno_search("EWOULDBLOCK") == (errno_info("EAGAIN"),)
    assert errno_search("no-such-words-anywhere") == ()
    assert errno_search("   ") == ()


def test_public_names_are_exported_and_documented() -> None:
    for name in ("Action", "ErrnoInfo", "ErrorCategory", "Triage", "UnknownErrnoName",
                 "errno_info", "errno_search", "errno_table", "triage"):
        assert name in pysockopt.__all__
        assert getattr(pysockopt, name).__doc__
    assert all(c.description for c in ErrorCategory)


# --- real errors from the kernel, explained and triaged


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()  # never listened: a SYN to it draws RST
    return port


def _check(exc: BaseException, name: str, category: ErrorCategory, action: Action) -> Triage:
    assert isinstance(exc, OSError) and exc.errno == getattr(errno, name), exc
    assert name in errno_info(exc).names
    verdict = triage(exc)
    assert (verdict.category, verdict.action) == (category, action), verdict
    assert verdict.info is errno_info(exc)
    assert verdict.reason.startswith(f"{verdict.info.name} (")
    return verdict


def test_connect_to_closed_port_is_refused() -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        socket.create_connection(("127.0.0.1", _closed_port()), timeout=5)
    _check(info.value, "ECONNREFUSED", C.REFUSED, Action.RECONNECT)


@linux_only
def test_reset_connection_is_handed_to_accept_and_first_recv_is_econnreset() -> None:
    # The meaning of ECONNABORTED says Linux does this rather than failing accept().
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST
    listener.settimeout(5)
    server, _ = listener.accept()
    server.settimeout(5)
    with pytest.raises(ConnectionResetError) as info:
        server.recv(10)
    _check(info.value, "ECONNRESET", C.PEER_RESET, Action.RECONNECT)
    server.close()
    listener.close()


@linux_only
def test_send_after_shutdown_is_epipe_not_eshutdown(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError) as info:
        client.send(b"x")
    _check(info.value, "EPIPE", C.PEER_CLOSED, Action.RECONNECT)


def test_nonblocking_recv_is_would_block(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    client.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        client.recv(10)
    verdict = _check(info.value, "EAGAIN", C.WOULD_BLOCK, Action.RETRY)
    assert "ready" in verdict.reason


def test_nonblocking_connect_is_in_progress_then_so_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    s = socket.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        s.connect(listener.getsockname())
    verdict = _check(info.value, "EINPROGRESS", C.IN_PROGRESS, Action.RETRY)
    assert "SO_ERROR" in verdict.reason
    _, writable, _ = select.select([], [s], [], 5)
    assert writable and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    s.close()
    listener.close()


def test_connect_twice_is_eisconn(tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    with pytest.raises(OSError) as info:
        client.connect(client.getpeername())
    _check(info.value, "EISCONN", C.INVALID, Action.GIVE_UP)


def test_port_taken_is_eaddrinuse() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    s = socket.socket()
    with pytest.raises(OSError) as info:
        s.bind(listener.getsockname())
    _check(info.value, "EADDRINUSE", C.ADDRESS, Action.GIVE_UP)
    s.close()
    listener.close()


def test_bind_to_an_address_not_on_this_host_is_eaddrnotavail() -> None:
    s = socket.socket()
    with pytest.raises(OSError) as info:
        s.bind(("192.0.2.1", 0))  # TEST-NET-1: configured nowhere; bind() sends nothing
    _check(info.value, "EADDRNOTAVAIL", C.ADDRESS, Action.RECONNECT)
    s.close()


def test_closed_descriptor_is_ebadf() -> None:
    s = socket.socket()
    fd = s.detach()
    os.close(fd)
    with pytest.raises(OSError) as info:
        read_keepalive(fd)
    _check(info.value, "EBADF", C.INVALID, Action.GIVE_UP)


def test_pipe_is_enotsock() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            read_keepalive(r)
        _check(info.value, "ENOTSOCK", C.INVALID, Action.GIVE_UP)
    finally:
        os.close(r)
        os.close(w)


@linux_only
def test_tcp_option_on_udp_is_enoprotoopt() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as info:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    _check(info.value, "ENOPROTOOPT", C.INVALID, Action.GIVE_UP)


@linux_only
def test_accept_on_a_socket_that_is_not_listening_is_einval() -> None:
    with socket.socket() as s, pytest.raises(OSError) as info:
        s.accept()
    _check(info.value, "EINVAL", C.INVALID, Action.GIVE_UP)
    assert triage(info.value, accepting=True).action is Action.GIVE_UP


def test_getpeername_unconnected_is_enotconn() -> None:
    with socket.socket() as s, pytest.raises(OSError) as info:
        s.getpeername()
    _check(info.value, "ENOTCONN", C.PEER_CLOSED, Action.RECONNECT)


@linux_only
@pytest.mark.root
def test_socket_destroyed_by_ss_is_econnaborted(netns_pair: NetnsPair) -> None:
    # ss -K acts on every socket its filter matches: only ever inside a namespace of our own.
    with netns_pair.connected() as (client, _):
        port = client.getsockname()[1]
        done = subprocess.run(["ip", "netns", "exec", netns_pair.a, "ss", "-K", "-tn",
                               f"sport = :{port}"], capture_output=True, text=True)
        # ss exits 0 even when SOCK_DESTROY is refused: its listing is the oracle.
        if str(port) not in done.stdout:
            pytest.skip("this kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY)")
        client.settimeout(5)
        with pytest.raises(ConnectionAbortedError) as info:
            client.recv(10)
    _check(info.value, "ECONNABORTED", C.PEER_RESET, Action.RECONNECT)
    assert triage(info.value, accepting=True).action is Action.RETRY


def test_descriptor_limit_is_emfile_and_retryable() -> None:
    # In a child process: lowering RLIMIT_NOFILE here would starve the rest of the suite.
    code = textwrap.dedent("""
        import resource, socket, json
        from pysockopt import triage
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))
        held = []
        try:
            for _ in range(64):
                held.append(socket.socket())
        except OSError as exc:
            print(json.dumps(triage(exc).as_dict()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    verdict = json.loads(out)
    assert verdict["errno"]["name"] == "EMFILE"
    assert (verdict["category"], verdict["action"]) == ("resource", "retry")
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 32  # ours untouched


@pytest.mark.root
def test_no_route_errors_in_a_private_namespace(netns_pair: NetnsPair) -> None:
    # Namespace a has only its /30; add a route that answers "unreachable" for another range.
    subprocess.run(["ip", "-n", netns_pair.a, "route", "add", "unreachable", "10.198.0.0/16"],
                   check=True, capture_output=True)
    for address, name in (("10.197.0.1", "ENETUNREACH"), ("10.198.0.1", "EHOSTUNREACH")):
        s = netns_pair.socket("a")
        with pytest.raises(OSError) as info:
            s.connect((address, 80))
        s.close()
        _check(info.value, name, C.UNREACHABLE, Action.RECONNECT)
        assert type(info.value) is OSError  # PEP 3151 has no subclass for these


@pytest.mark.root
@pytest.mark.slow
def test_vanished_peer_with_data_in_flight_is_etimedout(netns_pair: NetnsPair) -> None:
    with netns_pair.connected(5600) as (client, _server):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000)
        netns_pair.link_down("b")
        client.send(b"z" * 1000)
        client.settimeout(None)
        client.setblocking(False)
        error: OSError | None = None
        deadline = time.monotonic() + 20
        while error is None and time.monotonic() < deadline:
            select.select([client], [], [], 1)
            try:
                client.recv(10)
            except BlockingIOError:
                continue
            except OSError as exc:
                error = exc
        assert error is not None
        verdict = _check(error, "ETIMEDOUT", C.TIMEOUT, Action.RECONNECT)
        assert verdict.info is not None and "keepalive" in verdict.info.meaning


# --- triage of exceptions without an errno


def test_python_timeout_is_your_deadline_not_the_kernels(
        tcp_pair: tuple[socket.socket, ...]) -> None:
    client, _ = tcp_pair
    client.settimeout(0.05)
    with pytest.raises(TimeoutError) as info:
        client.recv(10)
    assert info.value.errno is None
    verdict = triage(info.value)
    assert (verdict.category, verdict.action, verdict.info) == (C.TIMEOUT, Action.RECONNECT,
                                                                None)
    assert "deadline" in verdict.reason
    assert triage(info.value, accepting=True).action is Action.RETRY
    kernel = triage(TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)))
    assert kernel.info is errno_info("ETIMEDOUT")


def test_asyncio_errors_without_errno_go_by_class() -> None:
    async def scenario() -> tuple[BaseException, BaseException]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(asyncio.IncompleteReadError) as short:
            await reader.readexactly(10)
        writer.close()
        server.close()
        # asyncio.TimeoutError: its own class on 3.10, an alias of TimeoutError from 3.11.
        with pytest.raises(asyncio.TimeoutError) as slow:
            await asyncio.wait_for(asyncio.sleep(1), 0.01)
        return short.value, slow.value

    short, slow = asyncio.run(scenario())
    assert (triage(short).category, triage(short).action) == (C.PEER_CLOSED, Action.RECONNECT)
    assert (triage(slow).category, triage(slow).action) == (C.TIMEOUT, Action.RECONNECT)
    lost = triage(ConnectionResetError("Connection lost"))  # asyncio's, with no errno
    assert (lost.category, lost.action) == (C.PEER_RESET, Action.RECONNECT)
    assert lost.info is errno_info("ECONNRESET") and "class" in lost.reason
    assert triage(BrokenPipeError()).info is errno_info("EPIPE")
    assert triage(BlockingIOError()).action is Action.RETRY


def test_every_python_timeout_class_is_a_timeout() -> None:
    import concurrent.futures

    # Distinct classes on 3.10, aliases of TimeoutError from 3.11: the verdict is the same.
    for exc in (TimeoutError(), asyncio.TimeoutError(), concurrent.futures.TimeoutError()):
        verdict = triage(exc)
        assert (verdict.category, verdict.action) == (C.TIMEOUT, Action.RECONNECT), exc


def test_tls_would_block_and_protocol_errors_from_real_handshakes() -> None:
    ctx = ssl.create_default_context()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    # Non-blocking handshake: the server has not answered yet.
    raw = socket.create_connection(listener.getsockname())
    raw.setblocking(False)
    tls = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    with pytest.raises(ssl.SSLWantReadError) as want:
        tls.do_handshake()
    verdict = triage(want.value)
    assert (verdict.category, verdict.action, verdict.info) == (C.WOULD_BLOCK, Action.RETRY,
                                                                None)
    with pytest.raises(ValueError):
        errno_info(want.value)  # SSLError.errno is an SSL library code
    # The "server" speaks plain text: a protocol error that reconnecting would repeat.
    server, _ = listener.accept()
    server.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" * 10)
    tls.setblocking(True)
    tls.settimeout(5)
    with pytest.raises(ssl.SSLError) as bad:
        tls.do_handshake()
    verdict = triage(bad.value)
    assert (verdict.category, verdict.action) == (C.TLS, Action.GIVE_UP), bad.value
    tls.close()
    server.close()
    # The server closes during the handshake: the peer is gone.
    raw = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.close()
    tls = ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    tls.settimeout(5)
    # 3.11.2 (Debian) reports this EOF as SSLZeroReturnError, later ones as SSLEOFError.
    with pytest.raises((ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)) as eof:
        tls.do_handshake()
    assert triage(eof.value).action is Action.RECONNECT
    tls.close()
    listener.close()
    cert = triage(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    assert (cert.category, cert.action) == (C.TLS, Action.GIVE_UP)


def test_name_resolution_errors() -> None:
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("not-an-address", 80, flags=socket.AI_NUMERICHOST)  # no DNS query
    verdict = triage(info.value)
    assert (verdict.category, verdict.action) == (C.RESOLUTION, Action.GIVE_UP)
    again = triage(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    assert (again.category, again.action) == (C.RESOLUTION, Action.RETRY)


def test_wrapped_errors_are_found_through_the_cause_chain() -> None:
    class ClientError(Exception):
        pass

    try:
        try:
            socket.create_connection(("127.0.0.1", _closed_port()), timeout=5)
        except OSError as exc:
            raise ClientError("request failed") from exc
    except ClientError as wrapped:
        verdict = triage(wrapped)
    assert (verdict.category, verdict.action) == (C.REFUSED, Action.RECONNECT)
    assert verdict.reason.startswith("ClientError caused by ECONNREFUSED")


def test_non_socket_errors_give_up_and_non_exceptions_are_type_errors() -> None:
    verdict = triage(ValueError("bad value"))
    assert (verdict.category, verdict.action, verdict.info) == (C.OTHER, Action.GIVE_UP, None)
    assert triage(OSError("no errno here")).action is Action.GIVE_UP
    with pytest.raises(TypeError):
        triage("ECONNRESET")  # type: ignore[arg-type]  # a name, not an exception: on purpose


def test_triage_agrees_with_the_table_for_every_errno() -> None:
    for info in errno_table():
        verdict = triage(OSError(info.code, info.message))
        assert (verdict.action, verdict.category, verdict.info) == (info.action, info.category,
                                                                    info)
        json.dumps(verdict.as_dict())


@pytest.mark.parametrize("name", ["ECONNABORTED", "EPROTO", "ENETDOWN", "EHOSTUNREACH",
                                  "ENETUNREACH", "EPERM", "EMFILE", "EAGAIN"])
def test_accepting_retries_errors_of_the_connection_being_accepted(name: str) -> None:
    exc = OSError(getattr(errno, name), "x")
    assert triage(exc, accepting=True).action is Action.RETRY


@pytest.mark.parametrize("name", ["EBADF", "EINVAL", "ENOTSOCK", "EFAULT"])
def test_accepting_still_gives_up_on_a_broken_listener(name: str) -> None:
    exc = OSError(getattr(errno, name), "x")
    assert triage(exc, accepting=True).action is Action.GIVE_UP


# --- CLI


@pytest.mark.parametrize("query", [str(errno.ECONNRESET), "ECONNRESET", "econnreset"])
def test_cli_lookup(query: str) -> None:
    code, text = run_cli("errno", query)
    assert code == 0
    assert text.startswith(f"ECONNRESET ({errno.ECONNRESET}): {os.strerror(errno.ECONNRESET)}")
    for label in ("category   peer-reset", "retryable  no", "action     reconnect", "meaning",
                  "advice"):
        assert label in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_cli_alias_shows_primary_and_aliases() -> None:
    code, text = run_cli("errno", "EWOULDBLOCK")
    assert code == 0 and text.startswith("EAGAIN (") and "aliases    EWOULDBLOCK" in text


def test_cli_json_one_object_or_a_list() -> None:
    code, text = run_cli("errno", "32", "--json")
    assert code == 0 and json.loads(text) == errno_info(32).as_dict()
    code, text = run_cli("errno", "EPIPE", "104", "--json")
    assert code == 0 and [d["name"] for d in json.loads(text)] == ["EPIPE", "ECONNRESET"]


def test_cli_unknown_name_exit_2_with_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli("errno", "ECONNRESTE")
    assert code == 2 and text == ""
    assert "did you mean ECONNRESET" in capsys.readouterr().err
    code, text = run_cli("errno", "EPIPE", "ECONNRESTE", "--json")
    assert code == 2
    known, unknown = json.loads(text)
    assert known["name"] == "EPIPE"
    assert unknown["known"] is False and "ECONNRESET" in unknown["suggestions"]


def test_cli_unknown_number_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli("errno", "99999")
    assert code == 2 and text == ""  # as an unknown name: said on stderr
    assert "errno 99999 is not defined on this platform" in capsys.readouterr().err
    code, text = run_cli("errno", "99999", "--json")
    assert code == 2 and json.loads(text)["known"] is False


def test_cli_search() -> None:
    code, text = run_cli("errno", "--search", "reset")
    assert code == 0
    assert re.search(rf"^\s*{errno.ECONNRESET}\s+ECONNRESET\s", text, re.MULTILINE)
    assert "ENETRESET" in text and text.splitlines()[0].split() == [
        "code", "name", "aliases", "category", "message"]
    code, text = run_cli("errno", "-s", "reset", "--json")
    assert code == 0 and {d["name"] for d in json.loads(text)} == {
        i.name for i in errno_search("reset")}


def test_cli_search_without_match_exits_1_like_grep() -> None:
    assert run_cli("errno", "--search", "zzzz-nothing") == (1, "no errno matches 'zzzz-nothing'\n")
    code, text = run_cli("errno", "--search", "zzzz-nothing", "--json")
    assert code == 1 and json.loads(text) == []


def test_cli_list_every_errno() -> None:
    code, text = run_cli("errno", "--list")
    lines = text.splitlines()
    assert code == 0 and len(lines) == len(errno_table()) + 1
    for info, line in zip(errno_table(), lines[1:], strict=True):
        assert line.split()[:2] == [str(info.code), info.name]
    code, text = run_cli("errno", "-l", "--json")
    assert code == 0 and [d["code"] for d in json.loads(text)] == [i.code for i in errno_table()]


@pytest.mark.parametrize("argv", [["errno"], ["errno", "104", "--list"],
                                  ["errno", "104", "--search", "x"],
                                  ["errno", "--list", "--search", "x"]])
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*argv)[0] == 2
    assert capsys.readouterr().err


def test_cli_entry_point_in_a_real_process() -> None:
    done = subprocess.run([sys.executable, "-m", "pysockopt", "errno", "ECONNREFUSED"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("ECONNREFUSED (")
    done = subprocess.run([sys.executable, "-m", "pysockopt", "errno", "EBOGUS"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "no errno named 'EBOGUS'" in done.stderr


# --- docs/errno.md


def test_reference_doc_covers_the_table() -> None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("docs/errno.md's numbers and messages were generated on Linux with glibc")
    page = (ROOT / "docs" / "errno.md").read_text()
    for info in errno_table():
        assert f"| {info.code} | `{info.name}` |" in page
    for name in SOCKET_ERRNOS:
        assert f"### {errno_info(name).name} (" in page


def _doc_examples() -> dict[str, Any]:
    page = (ROOT / "docs" / "errno.md").read_text()
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", page, re.DOTALL):
        if "def " in block:  # the first block is an interactive-style tour
            exec(compile(block, "docs/errno.md", "exec"), namespace)
    return namespace


def test_doc_retry_loop_reconnects_after_a_reset_and_gives_up_when_refused() -> None:
    request = _doc_examples()["request"]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    import threading

    def serve() -> None:
        first, _ = listener.accept()  # reset the first attempt
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.recv(100)
        first.close()
        second, _ = listener.accept()
        data = b""
        while chunk := second.recv(100):
            data += chunk
        second.sendall(data.upper())
        second.close()

    t = threading.Thread(target=serve)
    t.start()
    assert request(listener.getsockname(), b"ping", backoff=0.01) == b"PING"
    t.join(5)
    listener.close()
    with pytest.raises(ConnectionRefusedError):
        request(("127.0.0.1", _closed_port()), b"ping", attempts=2, backoff=0.01)


def test_doc_asyncio_server_logs_resets_quietly(caplog: pytest.LogCaptureFixture) -> None:
    handle = _doc_examples()["handle"]

    async def scenario() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"echo me")
        echoed = await reader.readexactly(7)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        for _ in range(100):  # bounded: until the handler has logged
            if caplog.records:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return echoed

    with caplog.at_level(logging.INFO, logger="echo"):
        assert asyncio.run(scenario()) == b"echo me"
    [record] = caplog.records
    assert record.levelno == logging.INFO and "ECONNRESET" in record.getMessage()


def test_doc_accept_loop_gives_up_on_a_socket_that_is_not_listening() -> None:
    accept_forever = _doc_examples()["accept_forever"]

    class Handled(Exception):
        pass

    def handle(conn: socket.socket, addr: object) -> None:
        conn.close()
        raise Handled

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    with pytest.raises(Handled):
        accept_forever(listener, handle)
    client.close()
    listener.close()
    with socket.socket() as not_listening, pytest.raises(OSError) as info:
        accept_forever(not_listening, handle)
    assert info.value.errno == errno.EINVAL


def test_doc_tour_values() -> None:
    info = errno_info(104 if LINUX else errno.ECONNRESET)
    assert (info.name, info.category, info.retryable, info.action) == (
        "ECONNRESET", C.PEER_RESET, False, Action.RECONNECT)
    assert isinstance(info, ErrnoInfo)
