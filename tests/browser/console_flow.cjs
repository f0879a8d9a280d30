// The console in a real headless Chromium, driven by playwright-core. Run by
// tests/tests/console_browser.rs in two phases around a Terraform apply:
//
//   node console_flow.cjs signup   sign up (a refused password first), verify through the
//                                  mailed link, log in, create an API token
//   node console_flow.cjs rest     log out, reset the password through the mailed link, log in,
//                                  change the email address, export the data, delete the account
//
// Everything comes from the environment (see `env` below); results go to OUT_FILE as JSON.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const BASE = env('CONSOLE_URL');
const MAILDIR = env('MAILDIR');
const STATE_FILE = env('STATE_FILE');
const OUT_FILE = env('OUT_FILE');
const EMAIL = env('EMAIL');
const NEW_EMAIL = env('NEW_EMAIL');
const ORG = env('ORG');
const PASSWORD = env('PASSWORD');
const NEW_PASSWORD = env('NEW_PASSWORD');

function decodeQuotedPrintable(text) {
  const bytes = text
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

// The plain-text part of each delivered message, with its recipient and subject.
function readMail() {
  const out = [];
  for (const sub of ['new', 'cur']) {
    const dir = path.join(MAILDIR, sub);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name);
      const raw = fs.readFileSync(file, 'utf8');
      const header = (key) => (raw.match(new RegExp(`^${key}: (.*)$`, 'mi')) || [])[1] || '';
      const plain = raw.split(/Content-Type: text\/plain[^\n]*\n/i)[1] || '';
      const body = plain.split(/\n--/)[0];
      const text = /Content-Transfer-Encoding: quoted-printable/i.test(plain.slice(0, 200)) ? decodeQuotedPrintable(body) : body;
      out.push({ to: header('To'), subject: header('Subject'), text, mtime: fs.statSync(file).mtimeMs });
    }
  }
  return out.sort((a, b) => a.mtime - b.mtime);
}

async function waitForLink(to, subject, linkPath, skip = 0) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const found = readMail().filter((m) => m.to.includes(to) && m.subject.includes(subject));
    if (found.length > skip) {
      const match = found[skip].text.match(new RegExp(`https?://\\S*${linkPath.replace(/\//g, '\\/')}\\?token=[0-9a-f]+`));
      if (!match) throw new Error(`no ${linkPath} link in mail "${subject}"`);
      return match[0];
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${to} about "${subject}"`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function waitForMail(to, subject) {
  const deadline = Date.now() + 30000;
  while (!readMail().some((m) => m.to.includes(to) && m.subject.includes(subject))) {
    if (Date.now() > deadline) throw new Error(`no mail to ${to} about "${subject}"`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function expectText(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor({ timeout: 10000 });
}

async function signupPhase(page) {
  await page.goto(`${BASE}/console/signup`);
  // Keyboard users reach the skip link first.
  await page.keyboard.press('Tab');
  expect((await page.evaluate(() => document.activeElement.textContent)) === 'Skip to content', 'the skip link comes first');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Your name').fill('Ada Operator');
  await page.getByLabel('Organization name').fill(ORG);
  await page.getByLabel('Password').fill('short');
  await page.getByLabel('I am at least 16 years old.').check();
  await page.getByLabel(/I accept the matrixhost customer terms/).check();
  await page.getByRole('button', { name: 'Create account' }).click();
  // The refusal sits next to the field, and the field says it is invalid.
  await expectText(page, 'must be at least 12 characters (R14)');
  expect((await page.getByLabel('Password').getAttribute('aria-invalid')) === 'true', 'the password field is marked invalid');
  expect((await page.getByLabel('Email address').inputValue()) === EMAIL, 'what was typed stays');

  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Check your email' }).waitFor();

  const verify = await waitForLink(EMAIL, 'Verify your email', '/console/verify');
  await page.goto(verify);
  await page.getByRole('button', { name: 'Verify my email address' }).click();
  await expectText(page, 'Your email address is verified');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();

  await page.getByRole('link', { name: 'API tokens' }).click();
  await page.getByLabel('Name').fill('terraform from the browser');
  await page.getByLabel('Expires after').selectOption('30');
  await page.getByRole('button', { name: 'Create token' }).click();
  const token = (await page.locator('#new-token').textContent()).trim();
  expect(/^mh_[0-9a-f]{64}$/.test(token), 'a token is shown');
  await page.reload();
  expect(!(await page.content()).includes(token), 'the token is shown only once');
  return { token };
}

async function restPhase(page) {
  await page.goto(`${BASE}/console`);
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();
  await page.getByRole('button', { name: 'Log out' }).click();
  await expectText(page, 'You are logged out.');

  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByRole('button', { name: 'Send the link' }).click();
  await expectText(page, 'If that address has an account');
  const reset = await waitForLink(EMAIL, 'Reset your matrixhost password', '/console/reset/confirm');
  await page.goto(reset);
  await page.getByLabel('New password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await expectText(page, 'Your password was changed');
  await waitForMail(EMAIL, 'Your matrixhost password was changed');

  await page.getByLabel('Email address').fill(EMAIL);
  await page.getByLabel('Password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: `Organization ${ORG}` }).waitFor();

  await page.getByRole('link', { name: 'Account', exact: true }).click();
  await page.getByLabel('New email address').fill(NEW_EMAIL);
  await page.locator('form[action="/console/account/email"]').getByLabel('Current password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Send the confirmation link' }).click();
  await expectText(page, 'We sent a link to the new address');
  await waitForMail(EMAIL, 'change of your matrixhost email address was requested');
  const confirm = await waitForLink(NEW_EMAIL, 'Confirm your new email address', '/console/email/confirm');
  await page.goto(confirm);
  await page.getByRole('button', { name: 'Make this my address' }).click();
  await page.getByRole('heading', { name: 'Your account' }).waitFor();
  await expectText(page, NEW_EMAIL);
  await waitForMail(EMAIL, 'Your matrixhost email address was changed');

  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download my data' }).click()]);
  const exportFile = path.join(path.dirname(OUT_FILE), 'export.json');
  await download.saveAs(exportFile);

  await page.getByLabel("Type the organization's name to confirm").fill(ORG);
  await page.locator('form[action="/console/account/delete"]').getByLabel('Current password').fill(NEW_PASSWORD);
  await page.getByRole('button', { name: 'Delete my account' }).click();
  await expectText(page, 'will be erased on');
  return { exportFile };
}

(async () => {
  const phase = process.argv[2];
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext(phase === 'rest' ? { storageState: STATE_FILE, acceptDownloads: true } : { acceptDownloads: true });
    const page = await context.newPage();
    const result = phase === 'signup' ? await signupPhase(page) : await restPhase(page);
    await context.storageState({ path: STATE_FILE });
    fs.writeFileSync(OUT_FILE, JSON.stringify(result));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
