#!/usr/bin/env python3
"""Onboards a customer through the console, as a person with a browser would, with the
verification step scripted: sign up, follow the verification link from the mail, log in and
create an API token. Python's standard library only; the console's forms work without
JavaScript.

    python3 scripts/onboard.py --console http://127.0.0.1:8787 --maildir STATE/api/maildir \
        --email it@example.com --organization example \
        --password-file .state/demo/customer-password --token-file .state/demo/customer-token

The mail is read from a Maildir: matrixhostd --dev without a relay delivers there. Reruns are
idempotent: a token in --token-file that still works is kept; an account that already exists
is logged in to with the password in --password-file. Secrets are written to 0600 files and
never printed.
"""

import argparse
import email
import email.policy
import http.cookiejar
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Console:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(path if path.startswith("http") else self.base + path, data=data)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def csrf(self):
        for cookie in self.jar:
            if cookie.name == "mh_csrf":
                return cookie.value
        self.request("/console/login")
        return next(c.value for c in self.jar if c.name == "mh_csrf")

    def post(self, path, **fields):
        return self.request(path, dict(fields, csrf=self.csrf()))


def write_secret(path, value):
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(path + ".tmp", path)


def token_works(base, token):
    req = urllib.request.Request(base.rstrip("/") + "/v1/billing-plans", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_for_link(maildir, to, subject, path, seen):
    deadline = time.time() + 60
    while time.time() < deadline:
        for sub in ("new", "cur"):
            directory = os.path.join(maildir, sub)
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
                if name in seen:
                    continue
                with open(os.path.join(directory, name), "rb") as f:
                    message = email.message_from_binary_file(f, policy=email.policy.default)
                if to not in str(message["To"]) or subject not in str(message["Subject"]):
                    continue
                text = message.get_body(preferencelist=("plain",)).get_content()
                match = re.search(r"https?://\S*" + re.escape(path) + r"\?token=[0-9a-f]+", text)
                if match:
                    seen.add(name)
                    return match.group(0)
        time.sleep(0.3)
    sys.exit(f"onboard: no mail to {to} about '{subject}' arrived in {maildir}")


def person_arguments(p):
    """The console, the Maildir its mail lands in, the person's address and their password file."""
    p.add_argument("--console", required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--password-file", required=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    person_arguments(p)
    p.add_argument("--organization", required=True)
    p.add_argument("--full-name", default="Demo Customer")
    p.add_argument("--token-file", required=True)
    a = p.parse_args()

    if os.path.exists(a.token_file) and token_works(a.console, open(a.token_file).read().strip()):
        print(f"onboard: {a.email} already has a working API token ({a.token_file})")
        return
    if not os.path.exists(a.password_file):
        write_secret(a.password_file, secrets.token_urlsafe(18))
    password = open(a.password_file).read().strip()

    c = Console(a.console)
    seen = set()
    for sub in ("new", "cur"):
        directory = os.path.join(a.maildir, sub)
        seen.update(os.listdir(directory) if os.path.isdir(directory) else [])
    status, headers, _ = c.post("/console/login", email=a.email, password=password)
    if status != 303:
        # No account yet (or not this password): sign up, R20 and R21 attested.
        status, headers, body = c.post("/console/signup", email=a.email, full_name=a.full_name, organization=a.organization,
                                       password=password, age_confirmed="yes", terms_accepted="yes")
        if status != 303:
            errors = re.findall(r'class="field-error" id="([^"]+)-error"><span[^>]*>Error: </span>([^<]*)', body)
            sys.exit("onboard: sign-up refused: " + "; ".join(f"{f}: {m}" for f, m in errors))
        print(f"onboard: signed up {a.email} for organization {a.organization}; waiting for the verification mail")
        link = wait_for_link(a.maildir, a.email, "Verify your email", "/console/verify", seen)
        token = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]
        c.request(link)
        status, _, _ = c.post("/console/verify", token=token)
        if status != 303:
            sys.exit("onboard: the verification link was refused")
        print("onboard: email address verified (R15)")
        status, headers, _ = c.post("/console/login", email=a.email, password=password)
        if status != 303:
            sys.exit("onboard: log-in failed after sign-up")
    print(f"onboard: logged in to the console as {a.email}")
    if "is not verified yet" in c.request("/console")[2]:
        # An earlier run stopped before verifying: ask for a new link.
        c.post("/console/verify/resend")
        link = wait_for_link(a.maildir, a.email, "Verify your email", "/console/verify", seen)
        c.request(link)
        c.post("/console/verify", token=urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0])
        print("onboard: email address verified (R15)")
    status, _, body = c.post("/console/tokens", name="demo terraform", expires_in_days="90")
    match = re.search(r'id="new-token">(mh_[0-9a-f]{64})<', body)
    if status != 201 or not match:
        sys.exit(f"onboard: creating the API token failed (HTTP {status})")
    write_secret(a.token_file, match.group(1))
    print(f"onboard: created an API token in the console; saved to {a.token_file} (not shown)")


if __name__ == "__main__":
    main()
