"""The redaction probes that got through: each value must leave the text it was written in."""

from __future__ import annotations

import pytest

from privacy.redaction import Redactor

PROBES = [
    ("lower-case IBAN", "Refund to iban de89 3704 0044 0532 0130 00 please", "de89 3704 0044 0532 0130 00"),
    ("phone with 00 prefix", "Berlin desk 0049 30 12345678", "0049 30 12345678"),
    ("phone with slash", "Zentrale 030/12345678", "030/12345678"),
    ("password=", "password=hunter2", "hunter2"),
    ("password: with a symbol", "password: Sup3rSecret!", "Sup3rSecret!"),
    ("Password: capitalised", "Password: Hunter2!x", "Hunter2!x"),
    ("passwd:", "passwd: hunter2", "hunter2"),
    ("secret:", "secret: s3cr3t-value", "s3cr3t-value"),
    ("connection string", "DSN postgresql://u:pw@h/db", ":pw@"),
    (
        "private key block",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ),
    (
        "bare AWS secret after its key id",
        "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "bare AWS secret near aws",
        "the aws secret for staging: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
]


@pytest.mark.parametrize(("name", "text", "value"), PROBES, ids=[p[0] for p in PROBES])
def test_probe_value_is_redacted(name: str, text: str, value: str) -> None:
    redacted = Redactor().redact(text).text
    assert value not in redacted, f"{name}: {redacted!r}"
