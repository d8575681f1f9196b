#!/usr/bin/python3
"""A test SMTP server (aiosmtpd) that writes each message it accepts to a folder.

Usage: smtp_sink.py PORT OUTDIR [--starttls CERT KEY | --implicit CERT KEY] [--auth USER:PASS]
       [--oauth2 INTROSPECTION_URL]

--oauth2 takes AUTH XOAUTH2 (only): the token is POSTed to the RFC 7662
introspection URL and taken when the answer is active for the user named.

Each accepted message becomes OUTDIR/NNNNNN.eml, with OUTDIR/NNNNNN.json holding
the envelope. To make it fail, write OUTDIR/control.json, e.g.
{"data": ["451 4.3.0 try later", "451 4.3.0 try later"]} : the next two DATA
commands get those answers, then it accepts again. Keys: "mail", "rcpt", "data".
Prints "READY" once it listens.
"""
import asyncio
import json
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, outdir, introspection_url=None):
        self.outdir = outdir
        self.count = 0
        self.introspection_url = introspection_url

    async def auth_XOAUTH2(self, server, args):
        """AUTH XOAUTH2 with its initial response, checked at the introspection URL."""
        import base64
        import urllib.parse
        import urllib.request
        if self.introspection_url is None or len(args) < 2:
            return AuthResult(success=False, handled=False)
        try:
            text = base64.b64decode(args[1]).decode()
            fields = dict(p.split("=", 1) for p in text.split("\x01") if "=" in p)
            user = fields["user"]
            token = fields["auth"].split(" ", 1)[1]
            data = urllib.parse.urlencode({"token": token}).encode()
            with urllib.request.urlopen(self.introspection_url, data, timeout=10) as r:
                answer = json.load(r)
        except Exception:
            return AuthResult(success=False, handled=False)
        ok = answer.get("active") is True and answer.get("username") == user
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _scripted(self, stage):
        path = os.path.join(self.outdir, "control.json")
        try:
            with open(path) as f:
                control = json.load(f)
        except (OSError, ValueError):
            return None
        answers = control.get(stage) or []
        if not answers:
            return None
        answer = answers.pop(0)
        control[stage] = answers
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(control, f)
        os.replace(tmp, path)
        return answer

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        answer = self._scripted("mail")
        if answer:
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self._scripted("rcpt")
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        answer = self._scripted("data")
        if answer:
            return answer
        self.count += 1
        base = os.path.join(self.outdir, "%06d" % self.count)
        # Envelope first, then the message, each renamed into place whole:
        # a reader never sees half a file, nor a message without its envelope.
        with open(base + ".json.tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        os.replace(base + ".json.tmp", base + ".json")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.replace(base + ".eml.tmp", base + ".eml")
        return "250 OK queued"


def main():
    port = int(sys.argv[1])
    outdir = sys.argv[2]
    args = sys.argv[3:]
    os.makedirs(outdir, exist_ok=True)
    kwargs = {}
    introspection_url = None
    while args:
        opt = args.pop(0)
        if opt in ("--starttls", "--implicit"):
            import ssl
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(args.pop(0), args.pop(0))
            if opt == "--starttls":
                kwargs["tls_context"] = ctx
                kwargs["require_starttls"] = True
            else:
                kwargs["ssl_context"] = ctx
                # aiosmtpd does not see implicit TLS as TLS when deciding to offer AUTH.
                kwargs["auth_require_tls"] = False
        elif opt == "--auth":
            user, password = args.pop(0).split(":", 1)

            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and auth_data.login.decode() == user
                    and auth_data.password.decode() == password
                )
                return AuthResult(success=ok, handled=False)

            kwargs["authenticator"] = authenticator
            kwargs["auth_required"] = True
        elif opt == "--oauth2":
            introspection_url = args.pop(0)
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = False
        else:
            sys.exit("unknown option " + opt)
    controller = Controller(Sink(outdir, introspection_url), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        asyncio.get_event_loop().run_until_complete(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
