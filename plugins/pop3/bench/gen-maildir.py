#!/usr/bin/env python3
# Copied from the project test bed (shared/reference/testbed/bin/gen-maildir.py).
"""Write N alert e-mails straight into <Maildir>/new (atomic tmp/ -> new/ rename).
usage: gen-maildir.py MAILDIR N [--kinds plain,xml,mime,b64] [--owner nobody]
File names follow the Maildir spec (time.MusecPpidQseq.host,S=size,W=vsize) so they are
unique and Dovecot needn't stat/scan files for sizes."""
import os, sys, time, socket, argparse, pwd, grp, base64, quopri
from email.utils import formatdate

def plain(i, now):
    return (f"From: Monitoring <monitor@example.test>\nTo: alerts@example.test\n"
            f"Subject: [ALERT] CRITICAL disk usage on db-{i%50:02d} is 97%\n"
            f"Date: {formatdate(now)}\nMessage-ID: <plain-{i}-{now:.0f}@example.test>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n"
            f"Content-Transfer-Encoding: 7bit\n\n"
            f"Host: db-{i%50:02d}\nService: disk /var/lib/postgresql\nState: CRITICAL\n"
            f"Output: DISK CRITICAL - free space: 3% (seq {i})\n").encode()

def xml(i, now):
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<alert xmlns="urn:example:alerting:1">\n'
            f'  <id>{i:08d}</id>\n  <severity>critical</severity>\n'
            f'  <source>zabbix-02</source>\n  <host>web-{i%20:02d}.example.test</host>\n'
            f'  <check name="http_5xx_rate" unit="%">12.5</check>\n'
            f'  <summary>HTTP 5xx rate above threshold &amp; rising \u2192 page on-call</summary>\n'
            f'  <labels><label k="team">sre</label><label k="env">prod</label></labels>\n'
            f'  <timestamp>{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}</timestamp>\n'
            f'</alert>\n')
    return (f"From: Zabbix <zabbix@example.test>\nTo: alerts@example.test\n"
            f"Subject: =?UTF-8?Q?PROBLEM_=E2=86=92_http_5xx_rate_on_web-{i%20:02d}?=\n"
            f"Date: {formatdate(now)}\nMessage-ID: <xml-{i}-{now:.0f}@example.test>\n"
            f"MIME-Version: 1.0\nContent-Type: application/xml; charset=UTF-8\n"
            f"Content-Transfer-Encoding: 8bit\nX-Alert-Severity: critical\n\n").encode() + body.encode("utf-8")

def mime(i, now):
    txt = f"Störung: Füllstand Tank {i%7} über 95 % – bitte prüfen.\nZeit: {formatdate(now)}\n"
    html = (f"<html><body><p><b>St\u00f6rung</b>: F\u00fcllstand Tank {i%7} \u00fcber 95&nbsp;% "
            f"\u2013 bitte pr\u00fcfen \u20ac.</p></body></html>\n")
    qp_txt = quopri.encodestring(txt.encode("iso-8859-1", "replace")).decode()
    qp_html = quopri.encodestring(html.encode("windows-1252")).decode()
    b = f"=_alt_{i}_{now:.0f}"
    return (f"From: =?ISO-8859-1?Q?Leitst=E4nde?= <scada@example.test>\nTo: alerts@example.test\n"
            f"Subject: =?ISO-8859-1?Q?St=F6rung_Tank_{i%7}_=FCber_95_%?=\n"
            f"Date: {formatdate(now)}\nMessage-ID: <mime-{i}-{now:.0f}@example.test>\n"
            f"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"{b}\"\n\n"
            f"This is a multi-part message in MIME format.\n\n"
            f"--{b}\nContent-Type: text/plain; charset=ISO-8859-1\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n{qp_txt}\n"
            f"--{b}\nContent-Type: text/html; charset=windows-1252\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n{qp_html}\n"
            f"--{b}--\n").encode("ascii")

def b64(i, now):
    body = base64.encodebytes(f"Job backup-{i} failed: exit 2\nЗадание не выполнено\n".encode("koi8-r")).decode()
    return (f"From: cron <root@example.test>\nTo: alerts@example.test\n"
            f"Subject: =?KOI8-R?B?{base64.b64encode('Ошибка backup'.encode('koi8-r')).decode()}?=\n"
            f"Date: {formatdate(now)}\nMessage-ID: <b64-{i}-{now:.0f}@example.test>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=KOI8-R\n"
            f"Content-Transfer-Encoding: base64\n\n{body}").encode("ascii")

KINDS = {"plain": plain, "xml": xml, "mime": mime, "b64": b64}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("maildir"); ap.add_argument("n", type=int)
    ap.add_argument("--kinds", default="plain,xml,mime,b64")
    ap.add_argument("--owner", help="chown files to USER (needed when root writes for dovecot's mail uid)")
    a = ap.parse_args()
    kinds = [KINDS[k] for k in a.kinds.split(",")]
    tmp, new = os.path.join(a.maildir, "tmp"), os.path.join(a.maildir, "new")
    for d in ("tmp", "new", "cur"): os.makedirs(os.path.join(a.maildir, d), exist_ok=True)
    uid = gid = None
    if a.owner:
        pw = pwd.getpwnam(a.owner); uid, gid = pw.pw_uid, pw.pw_gid
    host, pid, now = socket.gethostname().replace("/", "\\057").replace(":", "\\072"), os.getpid(), time.time()
    sec = int(now); usec = int((now - sec) * 1e6)
    for i in range(a.n):
        data = kinds[i % len(kinds)](i, now)
        vsize = len(data) + data.count(b"\n")        # size with CRLF line ends (what POP3 LIST reports)
        name = f"{sec}.M{usec}P{pid}Q{i}.{host},S={len(data)},W={vsize}"
        t = os.path.join(tmp, name)
        with open(t, "wb") as f: f.write(data)
        if uid is not None: os.chown(t, uid, gid)
        os.rename(t, os.path.join(new, name))
    print(f"wrote {a.n} messages to {new}")

if __name__ == "__main__":
    main()
