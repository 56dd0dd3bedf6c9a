"""`iotledger sign` and `iotledger verify` over the shared vectors."""

from __future__ import annotations

import io
import json

import pytest

from tests import cli
from tests.factories import vectors
from tests.test_signature import _altered
from worker.cli import main

VECTORS = vectors()


def _main(monkeypatch, capsys, args, stdin):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("vec", VECTORS, ids=[f"{i}-{v['kind']}" for i, v in enumerate(VECTORS)])
def test_sign_and_verify_commands_on_every_vector(vec, monkeypatch, capsys):
    payload = json.dumps(vec["payload"], ensure_ascii=False)
    code, out, _ = _main(monkeypatch, capsys, ["sign", "--key", vec["key"]], payload)
    assert (code, out) == (0, vec["sign"] + "\n")
    signed = json.dumps({**vec["payload"], "sign": vec["sign"]}, ensure_ascii=False)
    assert _main(monkeypatch, capsys, ["verify", "--key", vec["key"]], signed)[0] == 0
    for name in vec["payload"]:
        altered = {**_altered(vec["payload"], name), "sign": vec["sign"]}
        code, _, err = _main(monkeypatch, capsys, ["verify", "--key", vec["key"]], json.dumps(altered))
        assert code == 1, f"altering {name} must be rejected"
        assert "sign" in err


def test_the_console_script_itself_signs_and_verifies():
    vec = VECTORS[0]
    r = cli.run("sign", "--key", vec["key"], stdin=json.dumps(vec["payload"]))
    assert (r.returncode, r.stdout.strip()) == (0, vec["sign"])
    r = cli.run("verify", "--key", vec["key"], stdin=json.dumps({**vec["payload"], "amount": 2, "sign": vec["sign"]}))
    assert r.returncode == 1 and "does not match" in r.stderr


def test_verify_with_mch_id_uses_configured_keys():
    vec = VECTORS[0]
    env = {"IOTPAY_MERCHANTS": json.dumps({vec["payload"]["mchId"]: {"keys": ["other", vec["key"]]}})}
    r = cli.run("verify", stdin=json.dumps({**vec["payload"], "sign": vec["sign"]}), env=env)
    assert r.returncode == 0, r.stderr
    r = cli.run("verify", "--mch-id", "999", stdin=json.dumps({**vec["payload"], "sign": vec["sign"]}), env=env)
    assert r.returncode == 2 and "unknown merchant" in r.stderr  # a usage mistake, not an invalid sign


def test_bad_stdin_is_explained(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, ["sign", "--key", "k"], "[1]")
    assert code == 2 and "one JSON object" in err
    code, _, err = _main(monkeypatch, capsys, ["verify", "--key", "k"], "{bad")
    assert code == 2 and "not valid JSON" in err


def test_every_command_has_useful_help():
    r = cli.run("--help")
    assert r.returncode == 0
    for command in ("migrate", "sign", "verify", "services", "ingest", "order", "check"):
        assert command in r.stdout
        sub = cli.run(command, "--help")
        assert sub.returncode == 0 and "usage: iotledger " + command in sub.stdout
