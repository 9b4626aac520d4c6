"""Progress bars: drawn in a terminal and in a Jupyter kernel, hidden in logs and when off."""

from __future__ import annotations

import io
import sys
import types

import pytest

from snugtune.recipe.progress import in_kernel, progress, progress_bar, visible


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class ZMQInteractiveShell:  # named as ipykernel's shell; it has no ``kernel`` attribute here
    pass


class _KernelShell:
    kernel = object()


class _TerminalShell:  # the terminal's IPython: a shell without a kernel
    pass


def _ipython(monkeypatch: pytest.MonkeyPatch, shell: object | None) -> None:
    """An ``IPython`` module whose ``get_ipython()`` returns ``shell``."""
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def _stderr(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> io.StringIO:
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


@pytest.fixture(autouse=True)
def no_ipython(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts outside any IPython (whatever imported it in this process)."""
    monkeypatch.delitem(sys.modules, "IPython", raising=False)


def test_hidden_when_stderr_is_no_terminal_and_no_kernel_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = _stderr(monkeypatch, io.StringIO())
    assert list(progress(range(5), desc="train")) == [0, 1, 2, 3, 4]
    assert err.getvalue() == "" and not visible() and not in_kernel()


def test_shown_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _stderr(monkeypatch, _Terminal())
    assert list(progress(range(5), desc="train", unit="batch")) == [0, 1, 2, 3, 4]
    assert "train" in err.getvalue() and "batch" in err.getvalue()


@pytest.mark.parametrize("shell", [_KernelShell(), ZMQInteractiveShell()],
                         ids=["shell-with-kernel", "ZMQInteractiveShell"])
def test_shown_in_a_jupyter_kernel_whose_stderr_is_no_terminal(
        monkeypatch: pytest.MonkeyPatch, shell: object) -> None:
    """Without ipywidgets tqdm.auto is the text bar: it writes to stderr, which the cell shows."""
    err = _stderr(monkeypatch, io.StringIO())
    _ipython(monkeypatch, shell)
    assert in_kernel() and visible()
    assert list(progress(range(3), desc="finetune 1/2", total=3)) == [0, 1, 2]
    assert "finetune 1/2" in err.getvalue() and "3" in err.getvalue()


@pytest.mark.parametrize("shell", [None, _TerminalShell()], ids=["no-shell", "terminal-ipython"])
def test_ipython_without_a_kernel_is_no_kernel(
        monkeypatch: pytest.MonkeyPatch, shell: object | None) -> None:
    err = _stderr(monkeypatch, io.StringIO())
    _ipython(monkeypatch, shell)
    assert not in_kernel()
    assert list(progress(range(3), desc="train")) == [0, 1, 2]
    assert err.getvalue() == ""


def test_disabled_bars_stay_hidden_on_a_terminal_and_in_a_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = _stderr(monkeypatch, _Terminal())
    _ipython(monkeypatch, _KernelShell())
    assert list(progress(range(3), desc="train", enabled=False)) == [0, 1, 2]
    assert list(progress_bar("decode once", enabled=False)(range(2), 2)) == [0, 1]
    assert err.getvalue() == ""


def test_a_library_loop_gets_a_bar_with_its_total(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _stderr(monkeypatch, _Terminal())
    assert list(progress_bar("decode once")(iter(range(4)), 4)) == [0, 1, 2, 3]
    assert "decode once" in err.getvalue() and "/4" in err.getvalue()


def test_a_closed_or_plain_stream_is_no_terminal() -> None:
    closed = io.StringIO()
    closed.close()
    assert not visible(closed)  # isatty on a closed stream raises ValueError
    assert not visible(types.SimpleNamespace())  # type: ignore[arg-type]  # no isatty at all
    assert visible(_Terminal())
