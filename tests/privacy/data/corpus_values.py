"""Generators of realistic sensitive values (and near misses) for the redaction corpus.

Every value is built from first principles (Luhn, mod-97, MOD 11-2, real formats), seeded, so the
corpus is reproducible and independent of the detectors it measures.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from datetime import date, timedelta

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"

FIRST = "olivia liam emma noah ava mateo sofia arjun fatima kenji chloe david priya lucas hannah omar".split()
LAST = "martin nguyen okafor schmidt rossi kowalski tanaka silva murphy haddad johansson patel garcia".split()
PINYIN = (
    "zhangwei wangfang li.na liu.yang chen.jie yang.min zhao.lei huang.xin zhou.tao wu.hao xu.jing".split()
)
DOMAINS = "halden.io example.com corp.example.org mail.example.co.uk partners.example.net outlook.com".split()
CN_DOMAINS = "163.com qq.com 126.com sina.com.cn halden.cn example.com.cn foxmail.com".split()
CN_REGIONS = (
    "110101 110105 120101 310104 310115 320102 330106 340104 350203 370202 410105 420106 430104 "
    "440106 440305 500103 510107 610113 210202 230103 450103 530102 650102"
).split()
CN_MOBILE_PREFIXES = (
    "130 131 133 135 136 137 138 139 150 151 152 155 158 159 166 177 180 186 188 189 199".split()
)
CN_AREAS = "010 021 020 022 023 024 025 027 028 029 0571 0755 0512 0532 0591 0731 0871".split()
# BBAN shapes: "n" a digit, "a" a capital letter.
IBAN_BBAN = {
    "DE": "n" * 18, "GB": "aaaa" + "n" * 14, "FR": "n" * 23, "NL": "aaaa" + "n" * 10, "ES": "n" * 20,
    "IT": "a" + "n" * 22, "CH": "n" * 17, "BE": "n" * 12, "AT": "n" * 16, "PL": "n" * 24, "SE": "n" * 20,
    "IE": "aaaa" + "n" * 14,
}  # fmt: skip


def luhn_digit(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (1 if position % 2 else 2)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return luhn_digit(number[:-1]) == number[-1]


def iban_check(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def cn_id_check(body: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    value = (12 - sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11) % 11
    return "X" if value == 10 else str(value)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Values:
    """One seeded source of every value the corpus needs."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def digits(self, n: int, *, first: str = "0123456789") -> str:
        return self.r.choice(first) + "".join(self.r.choice(string.digits) for _ in range(n - 1))

    def chars(self, n: int, alphabet: str = ALNUM) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def group(self, s: str, sizes: tuple[int, ...], sep: str) -> str:
        out, i = [], 0
        for size in sizes:
            out.append(s[i : i + size])
            i += size
        return sep.join(part for part in out if part)

    # --- personal data -------------------------------------------------------------------------
    def email(self, lang: str) -> str:
        r = self.r
        first, last = r.choice(FIRST), r.choice(LAST)
        if lang == "zh" and r.random() < 0.7:
            local = r.choice(
                [
                    r.choice(PINYIN),
                    r.choice(PINYIN) + str(r.randint(1, 99)),
                    self.digits(9, first="123456789"),
                ]
            )
            return f"{local}@{r.choice(CN_DOMAINS)}"
        local = r.choice(
            [
                f"{first}.{last}",
                f"{first[0]}{last}",
                f"{first}_{last}+{r.choice(['hr', 'billing', 'kb'])}",
                f"{first}-{last}{r.randint(1, 99)}",
                f"{first}.{last}",
                first,
            ]
        )
        return f"{local}@{r.choice(DOMAINS)}"

    def phone(self, lang: str) -> str:
        pick = self.r.random()
        if lang == "zh":
            return (
                self.cn_mobile() if pick < 0.55 else self.cn_landline() if pick < 0.9 else self.intl_phone()
            )
        return self.intl_phone() if pick < 0.6 else self.nanp_phone() if pick < 0.9 else self.cn_mobile()

    def intl_phone(self) -> str:
        r, d = self.r, self.digits
        return r.choice(
            [
                f"+1 ({r.choice(['415', '212', '646', '312'])}) 555-01{d(2)}",
                f"+1 617-555-01{d(2)}",
                f"+44 20 7946 0{d(3)}",
                f"+44 7700 900{d(3)}",
                f"+44 (0)20 7946 0{d(3)}",
                f"+49 30 {d(7)}",
                f"+49 89 {d(4)} {d(4)}",
                f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
                f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
                f"+81 3-{d(4)}-{d(4)}",
                f"+81 90-{d(4)}-{d(4)}",
                f"+65 6{d(3)} {d(4)}",
                f"+852 2{d(3)} {d(4)}",
                f"+61 2 9{d(3)} {d(4)}",
                f"+91 98{d(3)} {d(5)}",
                f"+86 138 {d(4)} {d(4)}",
                f"+86-10-{d(4)}-{d(4)}",
                f"+86{r.choice(CN_MOBILE_PREFIXES)}{d(8)}",
            ]
        )

    def nanp_phone(self) -> str:
        a = self.r.choice(["415", "212", "650", "303", "617", "206"])
        nn = self.digits(2)
        return self.r.choice(
            [
                f"({a}) 555-01{nn}",
                f"{a}-555-01{nn}",
                f"{a}.555.01{nn}",
                f"1-800-555-01{nn}",
                f"{a} 555 01{nn}",
            ]
        )

    def cn_mobile(self) -> str:
        p, a, b = self.r.choice(CN_MOBILE_PREFIXES), self.digits(4), self.digits(4)
        return self.r.choice([f"{p}{a}{b}", f"{p}{a}{b}", f"{p} {a} {b}", f"{p}-{a}-{b}", f"+86 {p}{a}{b}"])

    def cn_landline(self) -> str:
        area = self.r.choice(CN_AREAS)
        local = self.digits(8 if len(area) == 3 else self.r.choice([7, 8]), first="23456789")
        head, tail = local[:-4], local[-4:]
        return self.r.choice(
            [
                f"{area}-{local}",
                f"{area}-{head} {tail}",
                f"({area}) {head} {tail}",
                f"（{area}）{head} {tail}",
            ]
        )

    def card(self, lang: str) -> str:
        r = self.r
        network = r.choice(["visa", "visa", "mc", "mc2", "amex", "discover", "unionpay", "unionpay19", "jcb"])
        prefix, length = {
            "visa": ("4", 16),
            "mc": (f"5{r.randint(1, 5)}", 16),
            "mc2": (str(r.randint(2221, 2720)), 16),
            "amex": (r.choice(["34", "37"]), 15),
            "discover": ("6011", 16),
            "unionpay": ("62", 16),
            "unionpay19": ("62", 19),
            "jcb": (str(r.randint(3528, 3589)), 16),
        }[network]
        body = prefix + self.digits(length - len(prefix) - 1)
        number = body + luhn_digit(body)
        style = r.choice(["compact", "space", "space", "dash"])
        if style == "compact":
            return number
        sizes = (
            (4, 6, 5)
            if network == "amex"
            else (6, 13)
            if network == "unionpay19" and r.random() < 0.5
            else (4,) * 5
        )
        return self.group(number, sizes, " " if style == "space" else "-")

    def iban(self, lang: str) -> str:
        country = self.r.choice(list(IBAN_BBAN))
        bban = "".join(
            self.r.choice(string.ascii_uppercase) if c == "a" else self.r.choice(string.digits)
            for c in IBAN_BBAN[country]
        )
        compact = country + iban_check(country, bban) + bban
        return (
            compact
            if self.r.random() < 0.35
            else " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
        )

    def ssn(self, lang: str) -> str:
        area = self.r.choice([n for n in range(1, 900) if n != 666])
        sep = "-" if self.r.random() < 0.85 else " "
        return f"{area:03d}{sep}{self.r.randint(1, 99):02d}{sep}{self.r.randint(1, 9999):04d}"

    def ssn_compact(self) -> str:
        return self.ssn("en").replace("-", "").replace(" ", "")

    def birth(self) -> date:
        return date(1950, 1, 1) + timedelta(days=self.r.randint(0, 20000))

    def cn_id(self, lang: str) -> str:
        body = self.r.choice(CN_REGIONS) + self.birth().strftime("%Y%m%d") + self.digits(3)
        return body + cn_id_check(body)

    def ipv4(self) -> str:
        r = self.r.randint
        return self.r.choice(
            [
                f"192.0.2.{r(1, 254)}",
                f"198.51.100.{r(1, 254)}",
                f"203.0.113.{r(1, 254)}",
                f"10.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}",
                f"192.168.{r(0, 255)}.{r(1, 254)}",
                f"172.{r(16, 31)}.{r(0, 255)}.{r(1, 254)}",
                f"{self.r.choice([8, 23, 45, 61, 101, 114, 185, 223])}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}",
            ]
        )

    def ipv6(self) -> str:
        def h() -> str:
            return format(self.r.randint(1, 0xFFFF), "x")

        full = ":".join(format(self.r.randint(0, 0xFFFF), "04x") for _ in range(8))
        return self.r.choice(
            [
                f"2001:db8:{h()}:{h()}::{h()}",
                full,
                f"fe80::{h()}:{h()}:{h()}:{h()}",
                f"2408:8207:{h()}:{h()}::{h()}",
                f"240e:{h()}:{h()}:{h()}::1",
                f"2001:db8::{h()}",
                f"::ffff:192.0.2.{self.r.randint(1, 254)}",
            ]
        )

    def ip(self, lang: str) -> str:
        return self.ipv6() if self.r.random() < 0.3 else self.ipv4()

    # --- secrets -------------------------------------------------------------------------------
    def password(self) -> str:
        while True:
            value = self.chars(self.r.randint(16, 24), ALNUM + "!@#$%^&*-_")
            if any(c.isdigit() for c in value) and any(c.isupper() for c in value) and value[-1] not in "!":
                return value

    def token(self, variant: str = "any") -> str:
        r, c = self.r, self.chars
        makers: dict[str, Callable[[], str]] = {
            "slack": lambda: f"xoxb-{self.digits(12)}-{self.digits(13)}-{c(24)}",
            "slack_user": lambda: f"xoxp-{self.digits(12)}-{self.digits(12)}-{self.digits(13)}-{c(32, HEX)}",
            "slack_app": lambda: f"xapp-1-A0{c(9, UPPER_ALNUM)}-{self.digits(13)}-{c(64, HEX)}",
            "aws": lambda: r.choice(["AKIA", "ASIA"]) + c(16, UPPER_ALNUM),
            "github": lambda: r.choice(["ghp_", "gho_", "ghs_"]) + c(36),
            "github_pat": lambda: f"github_pat_{c(22)}_{c(59)}",
            "openai": lambda: r.choice(["sk-", "sk-proj-"]) + c(48, ALNUM + "_-") + r.choice(string.digits),
            "jwt": self.jwt,
            "pem": self.pem,
            "password": self.password,
            "url_password": lambda: self.password().replace("@", "!").replace("#", "*"),
            "hex": lambda: c(r.choice([32, 40, 64]), HEX),
            "b64": lambda: base64.b64encode(r.randbytes(30)).decode(),
        }
        if variant == "any":
            variant = r.choice(
                ["slack", "slack_user", "slack_app", "aws", "github", "github_pat", "openai", "jwt"]
            )
        return makers[variant]()

    def jwt(self) -> str:
        header = {"alg": self.r.choice(["HS256", "RS256"]), "typ": "JWT"}
        payload = {
            "sub": self.digits(8),
            "name": self.r.choice(FIRST).title(),
            "iat": 1730700000 + self.r.randint(0, 9999),
        }
        parts = [json.dumps(header).encode(), json.dumps(payload).encode(), self.r.randbytes(32)]
        return ".".join(b64url(part) for part in parts)

    def pem(self) -> str:
        kind = self.r.choice(["RSA ", "EC ", "OPENSSH ", ""])
        body = base64.b64encode(self.r.randbytes(self.r.randint(90, 200))).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"

    # --- near misses for negative cases ----------------------------------------------------------
    def semver(self) -> str:
        return f"{self.r.randint(0, 12)}.{self.r.randint(0, 30)}.{self.r.randint(0, 20)}"

    def quad(self) -> str:
        return (
            f"{self.r.randint(1, 12)}.{self.r.randint(0, 20)}.{self.r.randint(0, 20)}.{self.r.randint(0, 99)}"
        )

    def luhn_failing_card(self) -> str:
        prefix = self.r.choice(["4", "5" + str(self.r.randint(1, 5))])
        body = prefix + self.digits(15 - len(prefix))
        number = body + str((int(luhn_digit(body)) + self.r.randint(1, 9)) % 10)
        assert not luhn_valid(number)
        return (
            number if self.r.random() < 0.4 else self.group(number, (4, 4, 4, 4), self.r.choice([" ", "-"]))
        )

    def uuid(self) -> str:
        raw = self.chars(32, HEX)
        return f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-a{raw[17:20]}-{raw[20:]}"

    def sha(self, full: bool = False) -> str:
        return self.chars(40 if full else self.r.choice([7, 8, 10]), HEX)

    def isbn13(self, group: str = "978-7-111") -> str:
        body = group.replace("-", "") + self.digits(12 - len(group.replace("-", "")))
        check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body)) % 10) % 10
        return f"{group}-{body[len(group.replace('-', '')) :]}-{check}"

    def bad_cn_id(self) -> str:
        body = self.r.choice(CN_REGIONS) + self.birth().strftime("%Y%m%d") + self.digits(3)
        if self.r.random() < 0.5:
            return body + str((int(cn_id_check(body).replace("X", "10")) + 1) % 10)
        return body[:6] + self.r.choice(["19990230", "20010931", "19851341", "20990101"]) + body[14:] + "1"

    def bad_ssn(self) -> str:
        a, g, s = (
            f"{self.r.randint(1, 665):03d}",
            f"{self.r.randint(1, 99):02d}",
            f"{self.r.randint(1, 9999):04d}",
        )
        return self.r.choice(
            [f"000-{g}-{s}", f"666-{g}-{s}", f"9{self.digits(2)}-{g}-{s}", f"{a}-00-{s}", f"{a}-{g}-0000"]
        )

    def bad_iban(self) -> str:
        good = self.iban("en").replace(" ", "")
        while True:
            wrong = good[:2] + f"{self.r.randint(2, 98):02d}" + good[4:]
            numeric = "".join(str(int(c, 36)) for c in wrong[4:] + wrong[:4])
            if int(numeric) % 97 != 1:
                return " ".join(wrong[i : i + 4] for i in range(0, len(wrong), 4))
