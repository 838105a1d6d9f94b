#!/usr/bin/env python3
"""Builds the first corpus of every fuzz target from the repository's golden files, fixtures
and the string literals of the parsers' own tests (see README.md). Writes seeds/<target>/.

Run by `scripts/fuzz seed`; afl then grows and minimizes them into corpus/<target>/."""

import hashlib
import pathlib
import re
import shutil
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
OUT = FUZZ / "seeds"
MAX_SEED = 64 * 1024


def rust_literals(path):
    """Every string literal of a Rust file ("..", b"..", r#".."#, br#".."#) as bytes."""
    text = path.read_text(encoding="utf-8")
    out = []
    i = 0
    pat = re.compile(r'(b?r(#*)")|(b?")')
    while True:
        m = pat.search(text, i)
        if not m:
            break
        start = m.start()
        # Skip char literals like '"' and lifetimes; a quote preceded by a quote is a char.
        if start > 0 and text[start - 1] == "'":
            i = m.end()
            continue
        if m.group(1):  # raw
            hashes = m.group(2)
            end = text.find('"' + hashes, m.end())
            if end < 0:
                break
            out.append(text[m.end():end].encode("utf-8"))
            i = end + 1 + len(hashes)
            continue
        j = m.end()
        buf = bytearray()
        while j < len(text) and text[j] != '"':
            c = text[j]
            if c == "\\":
                n = text[j + 1]
                j += 2
                if n == "n":
                    buf += b"\n"
                elif n == "r":
                    buf += b"\r"
                elif n == "t":
                    buf += b"\t"
                elif n == "0":
                    buf += b"\0"
                elif n in "\\\"'":
                    buf += n.encode()
                elif n == "x":
                    buf.append(int(text[j:j + 2], 16))
                    j += 2
                elif n == "u":
                    close = text.index("}", j)
                    buf += chr(int(text[j + 1:close], 16)).encode("utf-8")
                    j = close + 1
                elif n == "\n":
                    while j < len(text) and text[j] in " \t\n":
                        j += 1
                else:
                    buf += ("\\" + n).encode()
            else:
                buf += c.encode("utf-8")
                j += 1
        out.append(bytes(buf))
        i = j + 1
    return out


def md_blocks(path, lang):
    text = path.read_text(encoding="utf-8")
    return [b.encode() for b in re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)]


def files(pattern):
    return sorted(ROOT.glob(pattern))


class Seeds:
    def __init__(self):
        self.targets = {}

    def add(self, target, data, prefixes=(b"",)):
        if not data or len(data) > MAX_SEED:
            return
        for p in prefixes:
            self.targets.setdefault(target, set()).add(p + data)

    def write(self):
        if OUT.exists():
            shutil.rmtree(OUT)
        for target, items in sorted(self.targets.items()):
            d = OUT / target
            d.mkdir(parents=True)
            for data in sorted(items):
                name = hashlib.sha1(data).hexdigest()[:16]
                (d / name).write_bytes(data)
            print(f"{target}: {len(items)} seeds")


def main():
    s = Seeds()
    pop3 = ROOT / "plugins/pop3"
    # pop3_reply: replies from the protocol and client tests (control byte: single/multi line,
    # read size).
    for f in [pop3 / "src/protocol/response.rs", pop3 / "src/protocol/rfc2449.rs",
              pop3 / "src/protocol/rfc1939.rs", pop3 / "src/client/tests.rs",
              pop3 / "tests/fake_server.rs"]:
        if not f.exists():
            continue
        for lit in rust_literals(f):
            if lit.startswith((b"+OK", b"-ERR", b"+ ")):
                s.add("pop3_reply", lit, (b"\x00", b"\x01", b"\x07", b"\x20"))
    # mail: the golden mails.
    emls = files("plugins/pop3/tests/fixtures/**/*.eml")
    for f in emls:
        s.add("mail", f.read_bytes())
    # mail_html / mail_xml: the HTML and XML of the golden mails and of the parsers' tests.
    for f in emls:
        raw = f.read_bytes()
        for m in re.finditer(rb"(?is)<html.*?</html>", raw):
            s.add("mail_html", m.group(0))
        for m in re.finditer(rb"(?s)(<\?xml.*?)?<alert[ >].*?</alert>", raw):
            s.add("mail_xml", m.group(0))
    for lit in rust_literals(pop3 / "src/html.rs"):
        if b"<" in lit:
            s.add("mail_html", lit)
    for lit in rust_literals(pop3 / "src/xml.rs") + rust_literals(pop3 / "src/mail.rs"):
        if b"<" in lit and b">" in lit:
            s.add("mail_xml", lit)
            s.add("webhook_xml", lit, (b"\x00", b"\x03"))
        if lit.startswith((b"From:", b"Subject:", b"Content-Type:", b"MIME-Version:", b"Return-Path:")):
            s.add("mail", lit)
    # pop3_config: the [source.config] tables of the examples and the config tests.
    for f in [pop3 / "src/config.rs"]:
        for lit in rust_literals(f):
            if b"server" in lit and b"=" in lit:
                s.add("pop3_config", lit)
    for f in files("examples/config/*.toml") + files("plugins/pop3/*.toml"):
        text = f.read_text()
        for m in re.finditer(r'(?ms)^plugin = "pop3"\n\[source\.config\]\n(.*?)(?=^\[)', text):
            s.add("pop3_config", m.group(1).encode())
    # host_config: example and test configs.
    for f in files("examples/config/*.toml"):
        s.add("host_config", f.read_bytes())
    for f in [ROOT / "host/src/config/tests.rs"]:
        for lit in rust_literals(f):
            if b"[host]" in lit or b"[[route]]" in lit or b"[[source]]" in lit:
                s.add("host_config", lit)
    # webhook_json / webhook_xml / alertmanager.
    web = ROOT / "plugins/webhook"
    for lit in rust_literals(web / "src/payload/json.rs") + rust_literals(web / "src/routes_tests.rs") \
            + rust_literals(web / "tests/http.rs"):
        t = lit.strip()
        if t.startswith((b"{", b"[")):
            s.add("webhook_json", lit)
        if t.startswith(b"<"):
            s.add("webhook_xml", lit, (b"\x00", b"\x03", b"\x05"))
    for lit in rust_literals(web / "src/payload/xml.rs"):
        if b"<" in lit and b">" in lit:
            s.add("webhook_xml", lit, (b"\x00", b"\x03", b"\x05"))
    for f in files("plugins/webhook/tests/fixtures/*.json"):
        s.add("alertmanager", f.read_bytes(), (b"\x00", b"\x01", b"\x02"))
    for lit in rust_literals(web / "src/payload/alertmanager_tests.rs"):
        if lit.strip().startswith(b"{"):
            s.add("alertmanager", lit, (b"\x00", b"\x01"))
    # ucwa: the JSON of the protocol tests, as every kind of answer; challenges; batches.
    ucwa = ROOT / "plugins/ucwa/src/protocol"
    for f in sorted(ucwa.glob("*.rs")):
        for lit in rust_literals(f):
            t = lit.strip()
            if t.startswith(b"{"):
                s.add("ucwa", lit, (b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"))
            if t.lower().startswith(b"msrtcoauth") or b"grant_type" in t and b"href" in t:
                s.add("ucwa", lit, (b"\x06",))
            if b"InvalidToken" in t or t.startswith(b"28055"):
                s.add("ucwa", lit, (b"\x07",))
            if t.startswith(b"--") and b"HTTP/1.1" in t:
                s.add("ucwa_batch", b"multipart/batching; boundary=\"b1\"\n" + lit)
                s.add("ucwa_batch", b"multipart/batching;boundary=77f2569d\n" + lit)
    # ucma: the protocol tests' JSON and the protocol document's examples.
    ucma_lits = rust_literals(ROOT / "plugins/ucma/src/protocol_tests.rs")
    ucma_lits += md_blocks(ROOT / "docs/ucma-bridge-protocol.md", "json")
    for lit in ucma_lits:
        if lit.strip().startswith(b"{"):
            s.add("ucma", lit, (b"\x00", b"\x01", b"\x02", b"\x03"))
    s.write()
    empty = [t for t in TARGETS if t not in s.targets]
    if empty:
        sys.exit(f"no seeds for: {', '.join(empty)}")


TARGETS = ["pop3_reply", "mail", "mail_html", "mail_xml", "pop3_config", "webhook_json",
           "webhook_xml", "alertmanager", "ucwa", "ucwa_batch", "ucma", "host_config"]

if __name__ == "__main__":
    main()
