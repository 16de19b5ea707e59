"""Types and help: the stubs match the compiled module, the installed package
is typed for its users, help() shows real signatures, and the version number
has one source.

The mypy checks run in a subprocess from an empty directory, so they see the
installed package (its rlink/_core.pyi and py.typed), never the source tree.
They skip when mypy is not installed (it is in the `test` extra).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import pydoc
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rlink
from rlink import _core

PACKAGE = Path(rlink.__file__).resolve().parent
TIMEOUT = 300  # seconds for one mypy run; a cold start takes a few


def _mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install 'rlink[test]')")
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(proc.args)}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"


# ---- versions -------------------------------------------------------------------
def test_version_is_the_installed_metadata_version():
    assert rlink.__version__ == importlib.metadata.version("rlink")


def test_version_is_pep440():
    from packaging.version import Version  # pytest depends on packaging

    assert str(Version(rlink.__version__)) == rlink.__version__


# ---- stubs ------------------------------------------------------------------------
def test_stub_and_marker_ship_beside_the_module():
    assert (PACKAGE / "_core.pyi").is_file(), f"no _core.pyi in {PACKAGE}"
    assert (PACKAGE / "py.typed").is_file(), f"no py.typed in {PACKAGE}"
    core = Path(_core.__file__)
    assert core.parent.resolve() == PACKAGE and core.suffix in (".so", ".pyd"), core


def test_stubtest(tmp_path):
    """rlink/_core.pyi describes exactly what the compiled module has."""
    proc = _mypy(tmp_path, "mypy.stubtest", "rlink._core", "--mypy-config-file", str(_empty_config(tmp_path)))
    assert proc.returncode == 0, _report(proc)
    assert "Success" in proc.stdout, _report(proc)


def _empty_config(tmp_path: Path) -> Path:
    """An empty mypy config, so no setup.cfg/pyproject.toml nearby changes the result."""
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\n")
    return cfg


def test_package_type_checks(tmp_path):
    """mypy over the installed package itself: _nodes.py uses _core as the stubs say."""
    proc = _mypy(tmp_path, "mypy", "--config-file", str(_empty_config(tmp_path)), "-p", "rlink")
    assert proc.returncode == 0, _report(proc)


def test_users_get_types(tmp_path):
    """py.typed works: a user's program is checked against rlink's annotations."""
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""\
        from __future__ import annotations

        import rlink


        def use(learner: rlink.LearnerNode, actor: rlink.ActorNode) -> None:
            actor.send_trajectory({"x": 1}, timeout=1.0)
            data: dict = learner.receive(timeout=None)
            message: rlink.Message = learner.receive_message()
            version: int = learner.publish_parameters({"w": 1})
            params: rlink.Parameters | None = actor.latest_parameters()
            reply: dict = actor.request({"obs": 1}, timeout=2)
            learner.send(message.actor_id, {"a": 1})
            port: int = learner.port
            print(data, version, params, reply, port, rlink.__version__)
        """))
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""\
        import rlink


        def use(learner: rlink.LearnerNode) -> None:
            learner.receive(timeout="soon")
        """))
    proc = _mypy(tmp_path, "mypy", "--config-file", str(_empty_config(tmp_path)), "good.py", "bad.py")
    out = proc.stdout
    assert "missing library stubs or py.typed" not in out, _report(proc)
    assert not [line for line in out.splitlines() if line.startswith("good.py")], _report(proc)
    assert 'bad.py:5: error: Argument "timeout"' in out and "[arg-type]" in out, _report(proc)
    assert proc.returncode == 1, _report(proc)


# ---- help() --------------------------------------------------------------------------
# Parameters each signature must show, in this order (others may come between).
SIGNATURES = {
    rlink.LearnerNode.__init__: ["self", "port", "host", "reliable", "max_queue_messages",
                                 "max_message_bytes", "handshake_timeout"],
    rlink.ActorNode.__init__: ["self", "learner_address", "connect_timeout", "reliable",
                               "max_queue_messages", "max_message_bytes"],
    rlink.ActorNode.send_trajectory: ["self", "data", "timeout"],
    rlink.LearnerNode.receive: ["self", "timeout"],
    rlink.ActorNode.receive: ["self", "timeout"],
    _core.encode_frame: ["obj", "kind", "ref"],
    _core.decode_frame: ["frame", "max_message_bytes"],
}


def _in_order(want: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(name in it for name in want)


@pytest.mark.parametrize("func", list(SIGNATURES), ids=lambda f: f.__qualname__)
def test_signature_is_real(func):
    """inspect.signature and help() show the parameters, not (*args, **kwargs)."""
    params = inspect.signature(func).parameters
    assert _in_order(SIGNATURES[func], list(params)), list(params)
    assert not [p for p in params.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    text = pydoc.render_doc(func, renderer=pydoc.plaintext)
    for name in params:
        assert name in text, f"help({func.__qualname__}) does not show {name!r}:\n{text}"


@pytest.mark.parametrize("cls", [rlink.LearnerNode, rlink.ActorNode], ids=lambda c: c.__name__)
def test_help_shows_the_constructor(cls):
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    flat = re.sub(r"[\s|]+", "", text)  # Python 3.13+ wraps long signatures over lines
    first = next(p for p in SIGNATURES[cls.__init__] if p != "self")
    assert f"{cls.__name__}({first}" in flat, text[:2000]


def _public_callables():
    for name in rlink.__all__:
        obj = getattr(rlink, name)
        if inspect.isclass(obj) or callable(obj):
            yield f"rlink.{name}", obj
        if inspect.isclass(obj) and obj.__module__.startswith("rlink"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                yield f"rlink.{name}.{attr}", member


@pytest.mark.parametrize("name,obj", list(_public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_api_has_docstrings(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{name} has no docstring"
