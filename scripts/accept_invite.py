#!/usr/bin/env python3
"""Accepts a reserved user's invitation as the person would: follows the one-time link from the
invitation mail ("Your Matrix account on ...") and chooses a password, generated into a 0600
file and never printed. Python's standard library only.

    python3 scripts/accept_invite.py --console http://127.0.0.1:8787 \
        --maildir .state/demo/api/maildir --email admin@example.com \
        --password-file .state/demo/admin-password

The mail is read from a Maildir: matrixhostd --dev without a relay delivers there. Reruns are
idempotent: with a password already in --password-file, the invitation was accepted before.
"""

import argparse
import os
import re
import secrets
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onboard import Console, person_arguments, wait_for_link, write_secret  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    person_arguments(p)
    a = p.parse_args()

    if os.path.exists(a.password_file):
        print(f"accept_invite: {a.email} chose a password before ({a.password_file})")
        return
    link = wait_for_link(a.maildir, a.email, "Your Matrix account on", "/console/invite", set())
    token = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)["token"][0]
    c = Console(a.console)
    # 409: the account is still being made (only without Terraform, which waits for it).
    deadline = time.time() + 120
    while True:
        status, _, body = c.request(link)
        if status == 200:
            break
        if status != 409 or time.time() > deadline:
            sys.exit(f"accept_invite: the invitation link was refused (HTTP {status})")
        time.sleep(1)
    password = secrets.token_urlsafe(18)
    status, _, body = c.post("/console/invite", token=token, password=password)
    if status != 200:
        errors = re.findall(r'<div class="error-summary"[^>]*><p>([^<]*)', body)
        sys.exit(f"accept_invite: choosing the password failed (HTTP {status}) {' '.join(errors)}")
    write_secret(a.password_file, password)
    user = re.search(r"<strong>(@[^<]+)</strong>", body)
    print(f"accept_invite: {user.group(1) if user else a.email} chose a password; saved to {a.password_file} (not shown)")


if __name__ == "__main__":
    main()
