"""Real X events for window tests under Xvfb without a window manager: a key typed through
XTest, and the close request (WM_DELETE_WINDOW) a window manager's close button sends."""

from __future__ import annotations

import ctypes
import re
import subprocess
import time


class _ClientMessage(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("message_type", ctypes.c_ulong),
        ("format", ctypes.c_int),
        ("data", ctypes.c_long * 5),
    ]


class _Event(ctypes.Union):
    _fields_ = [("client", _ClientMessage), ("pad", ctypes.c_long * 24)]


CLIENT_MESSAGE = 33


def _x11():
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XStringToKeysym.restype = ctypes.c_ulong
    x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
    x11.XKeysymToKeycode.restype = ctypes.c_ubyte
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XSendEvent.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_int,
        ctypes.c_long,
        ctypes.POINTER(_Event),
    ]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return x11


def find_window(display: str, name: str, timeout: float = 120) -> int:
    """The id of the mapped top-level window titled `name` (waits for it to appear)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = subprocess.run(
            ["xwininfo", "-root", "-children", "-display", display],
            capture_output=True,
            text=True,
        ).stdout
        match = re.search(rf'^\s*(0x[0-9a-f]+) "{re.escape(name)}"', tree, re.M)
        if match:
            return int(match[1], 16)
        time.sleep(0.3)
    raise TimeoutError(f"no window {name!r} on {display}")


def type_key(display: str, key: str, at: tuple[int, int] = (200, 200)) -> None:
    """Move the pointer over the window (focus follows it without a window manager) and type
    `key` (an X keysym name, e.g. "q") through XTest."""
    x11, xtst = _x11(), ctypes.CDLL("libXtst.so.6")
    handle = x11.XOpenDisplay(display.encode())
    try:
        xtst.XTestFakeMotionEvent(ctypes.c_void_p(handle), -1, at[0], at[1], 0)
        code = x11.XKeysymToKeycode(handle, x11.XStringToKeysym(key.encode()))
        for down in (1, 0):
            xtst.XTestFakeKeyEvent(ctypes.c_void_p(handle), code, down, 0)
        x11.XFlush(handle)
    finally:
        x11.XCloseDisplay(handle)


def request_close(display: str, window: int) -> None:
    """Send `window` the WM_DELETE_WINDOW message that a window manager's close button sends."""
    x11 = _x11()
    handle = x11.XOpenDisplay(display.encode())
    try:
        event = _Event()
        event.client.type = CLIENT_MESSAGE
        event.client.window = window
        event.client.message_type = x11.XInternAtom(handle, b"WM_PROTOCOLS", 0)
        event.client.format = 32
        event.client.data[0] = x11.XInternAtom(handle, b"WM_DELETE_WINDOW", 0)
        x11.XSendEvent(handle, window, 0, 0, ctypes.byref(event))
        x11.XFlush(handle)
    finally:
        x11.XCloseDisplay(handle)
